"""The inference worker process: serves worker-pool deployments from their Redis queues.

    python -m workers.inference_worker --device cpu [--pullers 4] [--intra-op-threads N]

A standalone process, not a Celery worker: the request path is a Redis list per
deployment (see inference/pool.py), and a Celery prefork child would add a hop and a
pickle per request. Celery still orchestrates: the control tasks in inference/tasks.py
write the desired assignment (`mh:assign:{device}`, a hash of deployment specs) and wait
for the heartbeats to report it warm. Every worker of the device class reconciles with
that hash every 0.5 s, so a broadcast is never missed, a worker started later loads what
is assigned, and load/unload are idempotent. When the hash is gone altogether (Redis
restarted without persistence), a worker keeps serving what it has loaded: the periodic
reconciler (inference/reconcile.py) writes the assignment back from the database, and a
worker that lost its deployments (restarted) loads them again from there.

Per deployment a worker holds a LoadedModel (CUDA when device=gpu and it is really there;
the provider it got is reported) and a DynamicBatcher, and runs `--pullers` threads that
take up to max_batch_size frames at once from the queue (LPOP count, else BLPOP 1 s),
drop the expired ones unrun, submit the rest to the batcher and push the replies in one
pipeline. Heartbeats every 2 s (key names in docs/serving-workers.md).

Needs only REDIS_URL and the artifact files (a shared volume); no database.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import Future
from typing import Any

import numpy as np
import orjson
import redis

from config import heap
from config.env import env_int, env_str, log_level
from inference import pool_protocol as wire
from inference.runtime.batcher import DynamicBatcher
from inference.runtime.codec import check_inputs
from inference.runtime.errors import DeadlineExceeded, ModelExecutionError, RuntimeErrorBase
from inference.runtime.session import LoadedModel, available_providers
from inference.runtime.signature import Signature

logger = logging.getLogger("modelhub.inference_worker")
_REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
RECONCILE_INTERVAL_S = 0.5


class Served:
    """One deployment on this worker: its session, batcher and puller threads."""

    def __init__(self, spec: Any, worker: InferenceWorker) -> None:
        self.spec = spec
        self.spec_json = wire.spec_to_json(spec)
        self.worker = worker
        self.state = "loading"
        self.error = ""
        self.model: LoadedModel | None = None
        self.batcher: DynamicBatcher | None = None
        self.signature: Signature | None = None
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.expired = 0
        self.bad_frames = 0
        self.pulled = 0
        self.lock = threading.Lock()

    # -- lifecycle

    def load(self) -> None:
        spec = self.spec
        try:
            model = LoadedModel.load(
                spec.artifact_path,
                device=spec.device,
                intra_op_threads=self.worker.intra_op_threads,
                name=spec.model,
                version=str(spec.version),
                sha256=spec.artifact_sha256,
            )
            model.warm()
        except Exception as exc:  # noqa: BLE001 - reported in the heartbeat, the worker lives on
            self.state, self.error = "failed", str(exc)[:500]
            logger.error("deployment %s (%s) failed to load: %s", spec.key, spec.label, exc)
            return
        if self.stop.is_set():
            model.unload()
            return
        self.model, self.signature = model, model.signature
        self.batcher = DynamicBatcher(
            model, max_batch_size=spec.max_batch_size, max_queue_delay_ms=spec.max_queue_delay_ms
        )
        heap.settle()  # the new session's objects join the frozen start-up heap, before traffic
        for i in range(self.worker.pullers):
            t = threading.Thread(target=self._pull_loop, name=f"pull-{spec.key}-{i}", daemon=True)
            t.start()
            self.threads.append(t)
        self.state = "ready"
        logger.info(
            "deployment %s (%s) ready on %s (asked for %s) in %.0f ms load + %.0f ms warm",
            spec.key,
            spec.label,
            model.provider,
            spec.device,
            model.load_ms,
            model.warm_ms,
        )

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(3)
        if self.batcher is not None:
            self.batcher.close(drain=True, timeout_s=5)
        if self.model is not None:
            self.model.unload()
        self.state = "unloaded"

    # -- serving

    def _pull_loop(self) -> None:
        client = self.worker.client
        queue = wire.queue_key(self.spec.key)
        limit = max(1, self.spec.max_batch_size)
        while not self.stop.is_set():
            try:
                frames = client.lpop(queue, limit)
                if not frames:
                    got = client.blpop([queue], timeout=1)
                    if got is None:
                        continue
                    frames = [got[1]]
            except _REDIS_ERRORS as exc:
                logger.warning("redis unreachable while pulling %s: %s", queue, exc)
                self.stop.wait(0.5)
                continue
            try:
                self._serve(client, frames)
            except _REDIS_ERRORS as exc:
                logger.warning("redis unreachable while replying for %s: %s", queue, exc)
            except Exception:  # noqa: BLE001 - one bad batch must not kill the puller
                logger.exception("puller for %s failed on a batch", queue)

    def _serve(self, client: redis.Redis, frames: list[bytes]) -> None:
        batcher, signature = self.batcher, self.signature
        assert batcher is not None and signature is not None
        now = time.time()
        jobs: list[tuple[dict[str, Any], Future[dict[str, np.ndarray]] | None, RuntimeErrorBase | None, float]] = []
        expired = bad = 0
        for frame in frames:
            try:
                header, tensors = wire.decode_frame(frame)
                deadline = float(header["dl"])
                str(header["r"])  # a frame without a reply key is malformed
            except (wire.FrameError, KeyError, TypeError, ValueError) as exc:
                bad += 1
                logger.warning("dropping a malformed request frame on %s: %s", self.spec.key, exc)
                continue
            remaining = deadline - now
            if remaining <= 0:
                expired += 1  # its caller has given up (or is about to): never run it
                continue
            try:
                checked = check_inputs(tensors, signature, max_batch_size=self.spec.max_batch_size)
                future = batcher.submit(checked, timeout_s=remaining)
                jobs.append((header, future, None, deadline))
            except RuntimeErrorBase as exc:
                jobs.append((header, None, exc, deadline))
        with self.lock:
            self.pulled += len(frames)
            self.expired += expired
            self.bad_frames += bad
        if not jobs:
            return
        pipe = client.pipeline(transaction=False)
        provider = self.model.provider if self.model else ""
        for header, future, error, deadline in jobs:
            if future is not None:
                try:
                    outputs = future.result(timeout=max(deadline - time.time(), 0) + 1.0)
                    reply: dict[str, Any] = {"ok": 1, "p": provider, "w": self.worker.worker_id}
                    timing = getattr(future, "timing", None)
                    if timing is not None:  # rows in the ORT call, queue ms, model ms: for monitoring
                        reply["b"], reply["q"], reply["m"] = timing[0], round(timing[1], 3), round(timing[2], 3)
                    body = wire.encode_frame(reply, outputs)
                except RuntimeErrorBase as exc:
                    error = exc
                except Exception as exc:  # noqa: BLE001 - includes the future's own timeout
                    error = (
                        DeadlineExceeded(f"{self.spec.label}: no result before the deadline")
                        if time.time() >= deadline
                        else ModelExecutionError(f"{self.spec.label}: {exc}")
                    )
            if error is not None:
                body = wire.encode_frame(
                    {"ok": 0, "s": error.status, "c": error.code, "e": error.message, "w": self.worker.worker_id}
                )
            ttl_ms = int(max(deadline - time.time(), 0) * 1000) + 5000
            pipe.rpush(header["r"], body)
            pipe.pexpire(header["r"], ttl_ms)
        pipe.execute()

    def report(self) -> dict[str, Any]:
        spec = self.spec
        out: dict[str, Any] = {
            "deployment_id": spec.deployment_id,
            "endpoint": spec.endpoint,
            "model": spec.model,
            "version": spec.version,
            "role": spec.role,
            "state": self.state,
            "ready": self.state == "ready",
            "device": spec.device,
            "provider": self.model.provider if self.model else "",
            "error": self.error,
            "pulled": self.pulled,
            "expired_dropped": self.expired,
            "bad_frames": self.bad_frames,
        }
        if self.batcher is not None:
            stats = self.batcher.stats()
            out["batcher"] = stats.to_dict()
            out["batches"], out["batch_rows"] = stats.batches, stats.rows
            out["mean_batch_rows"] = round(stats.mean_batch_rows, 2)
            out["batcher_queue_depth"] = stats.queue_depth
        return out


class InferenceWorker:
    def __init__(
        self,
        *,
        device: str,
        redis_url: str,
        pullers: int = 4,
        intra_op_threads: int | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.device = device
        self.pullers = pullers
        self.intra_op_threads = intra_op_threads
        self.host = socket.gethostname()
        self.worker_id = worker_id or f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        pool = redis.ConnectionPool.from_url(
            redis_url,
            socket_connect_timeout=2,
            socket_timeout=5,
            socket_keepalive=True,
            max_connections=64,
        )
        self.client = redis.Redis(connection_pool=pool)
        self.served: dict[str, Served] = {}
        self.started_at = time.time()
        self.stopping = threading.Event()
        self.orphaned = False  # serving without a desired state in Redis (see reconcile)

    def reconcile(self) -> None:
        raw = self.client.hgetall(wire.assign_key(self.device))
        if wire.ASSIGN_MARKER.encode() not in raw:
            # No desired state in Redis (it restarted empty, or nothing was ever assigned):
            # keep serving what is loaded; inference/reconcile.py rewrites the assignment
            # from the database, and then this worker follows it again.
            if self.served and not self.orphaned:
                logger.warning(
                    "the assignment %s is gone (Redis restarted empty?): keeping %d deployments until it is restored",
                    wire.assign_key(self.device),
                    len(self.served),
                )
            self.orphaned = True
            return
        self.orphaned = False
        wanted = {k.decode(): v for k, v in raw.items() if not k.startswith(b"_")}
        for key, served in list(self.served.items()):
            if key not in wanted or wanted[key] != served.spec_json:
                logger.info("unloading deployment %s (%s)", key, served.spec.label)
                del self.served[key]
                threading.Thread(target=served.close, daemon=True).start()
        for key, raw_spec in wanted.items():
            if key in self.served:
                continue
            try:
                spec = wire.spec_from_json(raw_spec)
            except Exception as exc:  # noqa: BLE001
                logger.error("assignment %s is not a deployment spec: %s", key, exc)
                continue
            served = Served(spec, self)
            served.spec_json = raw_spec
            self.served[key] = served
            logger.info("loading deployment %s (%s) on %s", key, spec.label, self.device)
            threading.Thread(target=served.load, name=f"load-{key}", daemon=True).start()

    def heartbeat(self) -> None:
        now = time.time()
        expiry = now + wire.HEARTBEAT_TTL_MS / 1000.0
        deployments = {key: s.report() for key, s in self.served.items()}
        depths: dict[str, int] = {}
        pipe = self.client.pipeline(transaction=False)
        for key in deployments:
            pipe.llen(wire.queue_key(key))
        for key, depth in zip(deployments, pipe.execute(), strict=True):
            depths[key] = int(depth)
            deployments[key]["queue_depth"] = int(depth) + int(deployments[key].get("batcher_queue_depth", 0))
        beat = {
            "worker": self.worker_id,
            "host": self.host,
            "pid": os.getpid(),
            "device": self.device,
            "providers": available_providers(),
            "pullers": self.pullers,
            "intra_op_threads": self.intra_op_threads,
            "started_at": self.started_at,
            "ts": now,
            "deployments": deployments,
        }
        pipe = self.client.pipeline(transaction=False)
        pipe.set(wire.heartbeat_key(self.worker_id), orjson.dumps(beat), px=wire.HEARTBEAT_TTL_MS)
        pipe.zadd(wire.WORKERS_KEY, {self.worker_id: expiry})
        pipe.zremrangebyscore(wire.WORKERS_KEY, "-inf", now - 60)
        for key, report in deployments.items():
            if report["ready"]:
                pipe.zadd(wire.warm_key(key), {self.worker_id: expiry})
            else:
                pipe.zrem(wire.warm_key(key), self.worker_id)
            pipe.zremrangebyscore(wire.warm_key(key), "-inf", now - 60)
        pipe.execute()
        write_batch_stats({s.spec.model: s.batcher.stats() for s in self.served.values() if s.batcher is not None})

    def _forget_me(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(wire.heartbeat_key(self.worker_id))
        pipe.zrem(wire.WORKERS_KEY, self.worker_id)
        for key in self.served:
            pipe.zrem(wire.warm_key(key), self.worker_id)
        pipe.execute()

    def run(self) -> None:
        logger.info(
            "inference worker %s on device %s (providers %s), %d pullers per deployment",
            self.worker_id,
            self.device,
            ", ".join(available_providers()),
            self.pullers,
        )
        last_beat = 0.0
        while not self.stopping.is_set():
            try:
                self.reconcile()
                if time.monotonic() - last_beat >= wire.HEARTBEAT_INTERVAL_S:
                    self.heartbeat()
                    last_beat = time.monotonic()
            except _REDIS_ERRORS as exc:
                logger.warning("redis unreachable: %s", exc)
            # Beat soon after a load finishes so readiness does not wait a full interval.
            just_ready = any(s.state == "ready" and not getattr(s, "_beaten", False) for s in self.served.values())
            if just_ready:
                try:
                    self.heartbeat()
                    last_beat = time.monotonic()
                    for s in self.served.values():
                        if s.state == "ready":
                            s._beaten = True  # type: ignore[attr-defined]
                except _REDIS_ERRORS:
                    pass
            self.stopping.wait(RECONCILE_INTERVAL_S)
        logger.info("inference worker %s stopping: draining %d deployments", self.worker_id, len(self.served))
        try:
            self._forget_me()
        except _REDIS_ERRORS:
            pass
        for served in list(self.served.values()):
            served.close()


def write_batch_stats(stats: dict[str, Any]) -> None:
    """For bench/harness.py: $STATS_FILE.pid<PID>.json = {model: {"calls": N, "rows": M}}, if STATS_FILE is set."""
    path = env_str("STATS_FILE")
    if not path:
        return
    data = {model: {"calls": st.batches, "rows": st.rows} for model, st in stats.items()}
    tmp = f"{path}.pid{os.getpid()}.tmp"
    with open(tmp, "wb") as out:
        out.write(orjson.dumps(data))
    os.replace(tmp, f"{path}.pid{os.getpid()}.json")


def preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* pip wheels (onnxruntime-gpu[cuda,cudnn]) if they are there.

    Without it the CUDA provider only finds libraries on the system's library path and
    silently falls back to the CPU; the provider really got is reported either way.
    """
    import onnxruntime as ort

    try:
        ort.preload_dlls()
    except Exception as exc:  # noqa: BLE001 - a system-wide CUDA install needs no preload
        logger.info("onnxruntime.preload_dlls() did not load the CUDA wheels: %s", exc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Modelhub inference worker (worker-pool placement)")
    parser.add_argument("--device", choices=["cpu", "gpu"], default=env_str("MODELHUB_WORKER_DEVICE", "cpu"))
    parser.add_argument("--redis-url", default=env_str("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--pullers", type=int, default=env_int("MODELHUB_WORKER_PULLERS", 4))
    intra = env_int("MODELHUB_WORKER_INTRA_OP", 0) or None  # empty (from a .env) = unset
    parser.add_argument("--intra-op-threads", type=int, default=intra, help="ORT intra-op threads (default: ORT's)")
    parser.add_argument("--worker-id", default=env_str("MODELHUB_WORKER_ID") or None)
    parser.add_argument("--log-level", default=log_level())
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.device == "gpu":
        preload_cuda_libraries()
    worker = InferenceWorker(
        device=args.device,
        redis_url=args.redis_url,
        pullers=args.pullers,
        intra_op_threads=args.intra_op_threads,
        worker_id=args.worker_id,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stopping.set())
    heap.settle()
    worker.run()


if __name__ == "__main__":
    main()
