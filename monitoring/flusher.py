"""The background flusher: drains the recorder every ~2 s into Redis (or the database).

One daemon thread per process, started by the first `record()` in that process (so in
each gunicorn worker after the fork, never at import). A flush is one pipelined round
trip to Redis (HINCRBY/HINCRBYFLOAT into per-minute hashes with a TTL, plus the totals
that /metrics reads), or on the embedded default (no REDIS_URL) one database transaction.
It never raises: when Redis cannot be written, the records of that flush are counted as
dropped (`dropped`, reported to Redis as `mh:dropped` once it is back) and predictions
go on.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np

from config.db import retry_if_locked
from inference import density
from inference.pipelines import step_metrics
from inference.telemetry.recorder import MinuteStats, PayloadSample, Recorder, recorder
from monitoring import keys, rollups
from monitoring.models import MonitoringSettings
from monitoring.rollups import monitoring_store_flush
from monitoring.stats import tensor_features

log = logging.getLogger(__name__)

INPUT_ROWS_CAP = 256  # input rows per deployment per flush, after the request reservoir
CONFIG_REFRESH_S = 30.0
KEY_LAST_USED_EVERY_S = 60.0  # a key's "last used" is written at most this often per process
REDACTED = "[redacted]"


class Flusher:
    def __init__(self, rec: Recorder, *, redis_url: str | None = None, interval_s: float | None = None) -> None:
        self.recorder = rec
        self._redis_url = redis_url
        self._interval_s = interval_s
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self.dropped = 0  # records lost: Redis or database unwritable, or errors in record()
        self._dropped_unreported = 0
        self._recorder_dropped_seen = 0
        self.flushes = 0
        self.last_flush_at: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._config_at = 0.0
        self.redact: dict[str, list[str]] = {}
        self.max_bytes: dict[str, int] = {}
        self._keys_pending: dict[str, float] = {}  # key prefix -> last use not yet written
        self._keys_written: dict[str, float] = {}  # key prefix -> when this process last wrote it

    # --- configuration -------------------------------------------------------------------
    @property
    def redis_url(self) -> str:
        if self._redis_url is not None:
            return self._redis_url
        from django.conf import settings

        return settings.REDIS_URL

    @property
    def interval_s(self) -> float:
        if self._interval_s is not None:
            return self._interval_s
        from django.conf import settings

        return float(getattr(settings, "MONITORING_FLUSH_INTERVAL_S", 2.0))

    def client(self) -> Any:
        if self._client is None:
            import redis
            from django.conf import settings

            timeout = min(1.0, float(getattr(settings, "REDIS_SOCKET_TIMEOUT", 1.0)))
            self._client = redis.Redis.from_url(self.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return self._client

    def refresh_config(self) -> None:
        """Sampling rates, size caps and redaction lists from MonitoringSettings (every 30 s)."""
        from django.conf import settings

        try:
            rows = list(MonitoringSettings.objects.select_related("endpoint"))
        except Exception as exc:  # the database being away must not stop flushing
            self._note_error(f"reading monitoring settings: {exc}")
            return
        self.recorder.default_drift_rate = float(getattr(settings, "MONITORING_DEFAULT_DRIFT_SAMPLE_RATE", 0.0))
        self.recorder.payload_rates = {r.endpoint.name: r.payload_sample_rate for r in rows}
        self.recorder.drift_rates = {r.endpoint.name: r.drift_sample_rate for r in rows}
        self.redact = {r.endpoint.name: list(r.redact_fields or []) for r in rows}
        self.max_bytes = {r.endpoint.name: r.max_payload_bytes for r in rows}
        self._config_at = time.monotonic()

    # --- the thread ----------------------------------------------------------------------
    def start(self) -> None:
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="modelhub-monitoring-flusher", daemon=True)
            self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        self.refresh_config()  # here, not on the request that started the thread
        while not self._stop.wait(self.interval_s):
            if time.monotonic() - self._config_at > CONFIG_REFRESH_S:
                self.refresh_config()
            self.flush()
            self._close_db_connection()

    @staticmethod
    def _close_db_connection() -> None:
        try:
            from django.db import close_old_connections

            close_old_connections()
        except Exception:
            pass

    # --- flushing ------------------------------------------------------------------------
    def flush(self) -> int:
        """Drain the recorder and write it out; returns the records written. Never raises."""
        with self._flush_lock:
            try:
                return self._flush()
            except Exception as exc:  # a bug here must not reach the caller either
                self._note_error(f"flush failed: {exc}")
                return 0

    def _flush(self) -> int:
        self._write_keys_used()
        if self.redis_url:
            self._write_density()
            self._write_pipeline_steps()
        stats = self.recorder.drain()
        step_inputs = self.recorder.drain_step_inputs()
        samples = self.recorder.drain_samples()
        new_recorder_drops = self.recorder.dropped - self._recorder_dropped_seen
        if new_recorder_drops:
            self._recorder_dropped_seen = self.recorder.dropped
            self.dropped += new_recorder_drops
            self._dropped_unreported += new_recorder_drops
        if not stats and not step_inputs and not samples and not self._dropped_unreported:
            self.last_flush_at = time.time()
            return 0
        count = sum(s.count for s in stats.values())
        inputs = self._input_columns(stats)
        for key, columns in self._input_columns(step_inputs).items():  # a pipeline's model steps
            merged = inputs.setdefault(key, {})
            for name, values in columns.items():
                merged.setdefault(name, []).extend(values)
        payloads = [self._payload_row(s) for s in samples]
        try:
            if self.redis_url:
                self._write_redis(stats, inputs, payloads)
            else:
                self._write_database(stats, inputs, payloads)
        except Exception as exc:
            self.dropped += count
            self._dropped_unreported += count
            self._note_error(
                f"{'Redis' if self.redis_url else 'database'} write failed, {count} records dropped: {exc}"
            )
            return 0
        self.flushes += 1
        self.last_flush_at = time.time()
        return count

    def _write_keys_used(self) -> None:
        """Application keys' "last used", in the database: at most one write per key per
        KEY_LAST_USED_EVERY_S per process; a use in between is kept and written later."""
        for prefix, at in self.recorder.drain_keys_used().items():
            self._keys_pending[prefix] = max(at, self._keys_pending.get(prefix, 0.0))
        now = time.monotonic()
        due = {
            p: at
            for p, at in self._keys_pending.items()
            if now - self._keys_written.get(p, -KEY_LAST_USED_EVERY_S) >= KEY_LAST_USED_EVERY_S
        }
        if not due:
            return

        try:
            rollups.api_keys_last_used_store(due)
        except Exception as exc:  # the database being away must not stop flushing
            self._note_error(f"writing keys' last use: {exc}")
            return
        for prefix in due:
            self._keys_written[prefix] = now
            del self._keys_pending[prefix]
        if len(self._keys_written) > 10_000:  # keys come and go: forget old ones
            self._keys_written = {p: t for p, t in self._keys_written.items() if now - t < KEY_LAST_USED_EVERY_S}

    def _write_density(self) -> None:
        """This process's model-memory report for /metrics (inference/density.py)."""
        try:
            density.publish(self.client())
        except Exception as exc:  # Redis away: the next flush writes it again
            self._note_error(f"writing the model-memory report: {exc}")

    def _write_pipeline_steps(self) -> None:
        """This process's pipeline step counts into the shared totals (inference/pipelines/step_metrics.py)."""
        try:
            step_metrics.publish(self.client())
        except Exception as exc:  # Redis away: the next flush sends them
            self._note_error(f"writing the pipeline step counts: {exc}")

    def _note_error(self, message: str) -> None:
        now = time.time()
        if self.last_error_at is None or now - self.last_error_at > 60:
            log.warning("monitoring flusher: %s", message)
        self.last_error, self.last_error_at = message[:300], now

    def _write_redis(
        self,
        stats: dict[tuple[int, str, str, str], MinuteStats],
        inputs: dict[tuple[int, str, str], dict[str, list[float]]],
        payloads: list[dict[str, Any]],
    ) -> None:
        from django.conf import settings

        ttl = int(getattr(settings, "MONITORING_KEY_TTL_S", 6 * 3600))
        cap = int(getattr(settings, "MONITORING_SAMPLES_PER_ENDPOINT", 1000))
        pipe = self.client().pipeline(transaction=False)
        for (minute, endpoint, deployment, role), s in stats.items():
            ints, floats = keys.encode_stats(s)
            key = keys.minute_key(minute, endpoint, deployment, role)
            total = keys.totals_key(endpoint, deployment, role)
            for target in (key, total):
                for field, value in ints.items():
                    pipe.hincrby(target, field, value)
                for field, fvalue in floats.items():
                    pipe.hincrbyfloat(target, field, fvalue)
            pipe.expire(key, ttl)
            pipe.zadd(keys.MINUTES_INDEX, {key: minute})
            pipe.sadd(keys.TOTALS_INDEX, keys.series(endpoint, deployment, role))
        for (minute, endpoint, deployment), columns in inputs.items():
            key = keys.inputs_key(minute, endpoint, deployment)
            pipe.rpush(key, json.dumps(columns, separators=(",", ":")))
            pipe.expire(key, ttl)
            pipe.zadd(keys.INPUTS_INDEX, {key: minute})
        for row in payloads:
            key = keys.samples_key(row["endpoint"])
            pipe.lpush(key, json.dumps(row, separators=(",", ":")))
            pipe.ltrim(key, 0, cap - 1)
            pipe.sadd(keys.SAMPLES_INDEX, row["endpoint"])
        unreported = self._dropped_unreported
        if unreported:
            pipe.incrby(keys.DROPPED, unreported)
        pipe.execute()
        self._dropped_unreported -= unreported

    def _write_database(
        self,
        stats: dict[tuple[int, str, str, str], MinuteStats],
        inputs: dict[tuple[int, str, str], dict[str, list[float]]],
        payloads: list[dict[str, Any]],
    ) -> None:
        rollups = [((minute, ep, dep, role), keys.stats_to_rollup(s)) for (minute, ep, dep, role), s in stats.items()]
        # One short transaction, run again if it lost the race for SQLite's write lock.
        retry_if_locked(lambda: monitoring_store_flush(rollups=rollups, inputs=list(inputs.items()), payloads=payloads))

    def after_fork(self) -> None:
        # Threads do not survive a fork: the child starts its own on its first record.
        self._thread = None
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._client = None
        self.dropped = self._dropped_unreported = self._recorder_dropped_seen = 0
        self.flushes = 0
        self._keys_pending, self._keys_written = {}, {}

    # --- turning references into plain values (off the request path) ----------------------
    @staticmethod
    def _input_columns(
        stats: dict[tuple[int, str, str, str], MinuteStats],
    ) -> dict[tuple[int, str, str], dict[str, list[float]]]:
        out: dict[tuple[int, str, str], dict[str, list[float]]] = {}
        for (minute, endpoint, deployment, _role), s in stats.items():
            if not s.inputs:
                continue
            # Stack the kept requests' rows per input first, then split into features once:
            # splitting per request cost one astype per feature per request (8,192 for 32
            # requests of a 256-feature model), most of a flush's CPU.
            by_input: dict[str, list[Any]] = {}
            for inputs in s.inputs:
                for name, value in inputs.items():
                    by_input.setdefault(name, []).append(value)
            stacked: dict[str, np.ndarray] = {}
            for name, arrays in by_input.items():
                try:
                    stacked[name] = np.concatenate([np.asarray(a) for a in arrays])[:INPUT_ROWS_CAP]
                except (ValueError, TypeError):  # scalars, or rows whose shapes differ: not tabular features
                    continue
            columns = out.setdefault((minute, endpoint, deployment), {})
            for name, values in tensor_features(stacked).items():
                columns.setdefault(name, []).extend(values[np.isfinite(values)].tolist())
        return {k: v for k, v in out.items() if v}

    def _payload_row(self, sample: PayloadSample) -> dict[str, Any]:
        limit = self.max_bytes.get(sample.endpoint, 16384)
        fields = self.redact.get(sample.endpoint, [])
        request, req_cut = prepare_payload(sample.payload, redact_fields=fields, max_bytes=limit)
        response, resp_cut = prepare_payload(sample.response, redact_fields=fields, max_bytes=limit)
        return {
            "id": uuid.uuid4().hex,
            "at": sample.at,
            "endpoint": sample.endpoint,
            "deployment": sample.deployment,
            "role": sample.role,
            "ok": sample.ok,
            "latency_ms": round(sample.latency_ms, 3),
            "request": request,
            "response": response,
            "truncated": req_cut or resp_cut,
        }


def redact(value: Any, fields: Iterable[str]) -> Any:
    """Replace the values of the named JSON keys (anywhere) and of named V2 inputs/outputs."""
    names = set(fields)
    if not names:
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        named = isinstance(value.get("name"), str) and value["name"] in names
        for k, v in value.items():
            if k in names or (named and k == "data"):
                out[k] = REDACTED
            else:
                out[k] = redact(v, names)
        return out
    if isinstance(value, list):
        return [redact(v, names) for v in value]
    return value


def prepare_payload(body: bytes | None, *, redact_fields: Iterable[str], max_bytes: int) -> tuple[str, bool]:
    """A body as stored text: redacted, and replaced by a marker when over `max_bytes`.

    A body that cannot be parsed as JSON is kept only when nothing is to be redacted and
    it is UTF-8 text: otherwise a marker with its size, so that a field meant to be
    redacted is never stored by accident.
    """
    fields = list(redact_fields)
    if body is None:
        return "", False
    data = bytes(body)
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        parsed = None
        if fields:
            return f"[unparsed body of {len(data)} bytes withheld: redaction is configured]", False
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return f"[binary body of {len(data)} bytes]", False
    else:
        text = json.dumps(redact(parsed, fields), separators=(",", ":")) if fields else data.decode("utf-8")
    if len(text.encode("utf-8")) > max_bytes:
        return f"[body of {len(data)} bytes over the {max_bytes}-byte sample limit]", True
    return text, False


flusher = Flusher(recorder)
_atexit_registered = False
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=flusher.after_fork)


def ensure_started() -> None:
    """Start this process's flusher thread (the recorder calls it on its first record)."""
    global _atexit_registered
    from django.conf import settings

    if float(getattr(settings, "MONITORING_FLUSH_INTERVAL_S", 2.0)) <= 0:
        return
    flusher.start()
    if not _atexit_registered:
        atexit.register(flusher.flush)
        _atexit_registered = True


def flush_now() -> int:
    """Flush the default recorder now, in the calling thread (tests, shutdown)."""
    return flusher.flush()


def flusher_state() -> dict[str, Any]:
    """This process's flusher, for readiness and /metrics."""
    return {
        "running": flusher.running,
        "mode": "redis" if flusher.redis_url else "database",
        "flushes": flusher.flushes,
        "last_flush_at": flusher.last_flush_at,
        "dropped_records": flusher.dropped,
        "last_error": flusher.last_error,
        "last_error_at": flusher.last_error_at,
    }
