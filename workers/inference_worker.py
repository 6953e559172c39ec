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

A worker's models live in one ModelRepository (inference/runtime/repository.py, the class
a web process serves its in-process models from): per deployment a session (CUDA when
device=gpu and it is really there; the provider it got is reported) and, when
max_batch_size > 1, a DynamicBatcher. Per deployment the worker runs `--pullers` threads that
take up to max_batch_size frames at once from the queue (LPOP count, else BLPOP 1 s),
drop the expired ones unrun, submit the rest to the batcher and push the replies in one
pipeline. Heartbeats every 2 s (key names in docs/serving-workers.md).

Needs only REDIS_URL and the artifacts: from a volume shared with the web processes, or
fetched by sha256 from the platform with a worker key into a local cache with a disk
budget (inference/runtime/artifacts.py; docs/serving-workers.md, "Artifacts"); no database.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import socket
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future
from typing import Any

import numpy as np
import orjson
import redis

from config import heap, serving
from config.env import env_int, env_str, log_level
from inference import pool_protocol as wire
from inference.bench_stats import write_batch_stats
from inference.runtime.artifacts import ArtifactCache, ArtifactSource
from inference.runtime.codec import check_inputs
from inference.runtime.errors import (
    DeadlineExceeded,
    InputError,
    MemoryBudgetExceeded,
    ModelExecutionError,
    RuntimeErrorBase,
)
from inference.runtime.repository import ModelRepository, ServedModel
from inference.runtime.session import available_providers
from workers.direct_server import DirectServer, parse_bind

logger = logging.getLogger("modelhub.inference_worker")
_REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
RECONCILE_INTERVAL_S = 0.5
# One request taken from a frame: its batcher future, or the error that answers it, and its deadline.
# Distinct request layouts a deployment remembers as checked (forgotten all at once beyond it).
_LAYOUTS_KEPT = 256
# A direct frame arriving while this many max-size batches already wait in the deployment's
# batcher goes through the Redis queue instead: any worker may take it there (one started by
# the autoscaler, which watches that queue's length), not only this busy one.
_SPILL_BATCHES = 4
_Job = tuple[Future[dict[str, np.ndarray]] | None, RuntimeErrorBase | None, float]


class Served:
    """One deployment on this worker: its queue's puller threads and counters.

    The model itself (session and batcher) is owned by the worker's ModelRepository, the
    same class that holds a web process's in-process models; this object only asks the
    repository for it by the deployment's key and feeds it from the Redis queue.
    """

    def __init__(self, spec: Any, worker: InferenceWorker) -> None:
        self.spec = spec
        self.spec_json = wire.spec_to_json(spec)
        self.worker = worker
        self.state = "loading"
        self.error = ""
        self.served: ServedModel | None = None
        self.stop = threading.Event()  # withdrawn: stop for good
        self.pull_stop = threading.Event()  # this load's pullers stop (withdrawn or unloaded to make room)
        self.cold_start = False  # this load was started by a request for a cold deployment
        self.threads: list[threading.Thread] = []
        self.expired = 0
        self.bad_frames = 0
        self.version_refused = 0
        self.pulled = 0  # requests taken from the queue
        self.frames = 0  # frames they came in (a web process coalesces requests into frames)
        self.spilled = 0  # direct frames sent back to go through the Redis queue (the batcher was full)
        self.artifact_source = ""  # shared (the volume), cache (already here) or fetched (from the platform)
        self.path = ""  # the file loaded: on the shared volume or in the artifact cache
        self.lock = threading.Lock()
        # request layouts (name, dtype, shape per tensor) already checked against the model
        self.layouts: dict[tuple[tuple[str, str, tuple[int, ...]], ...], InputError | bool] = {}

    # -- lifecycle

    def load(self) -> None:
        spec = self.spec
        self.state = "loading"
        try:
            if not self.artifact_source:  # acquired once per assignment: a cold reload finds it here
                self.path, self.artifact_source = self.worker.artifacts.acquire(
                    spec.artifact_sha256, spec.artifact_path, stop=self.stop, waiting=self._waiting
                )
            self.error = ""
            served = self.worker.repository.load(
                spec.key,
                self.path,
                device="gpu" if spec.device == "gpu" else "cpu",
                max_batch_size=spec.max_batch_size,
                max_queue_delay_ms=spec.max_queue_delay_ms,
                intra_op_threads=self.worker.intra_op_threads,
                name=spec.model,
                version=str(spec.version),
                sha256=spec.artifact_sha256,
                pinned=spec.pinned,
            )
        except MemoryBudgetExceeded as exc:
            # No room even after unloading every unpinned model: an evictable deployment
            # stays cold (loaded when room frees up and a request comes); a pinned one failed.
            self.state, self.error = ("failed", str(exc)[:500]) if spec.pinned else ("cold", "")
            logger.warning("deployment %s (%s) not loaded: %s", spec.key, spec.label, exc)
            return
        except Exception as exc:  # noqa: BLE001 - reported in the heartbeat, the worker lives on
            self.state, self.error = "failed", str(exc)[:500]
            logger.error("deployment %s (%s) failed to load: %s", spec.key, spec.label, exc)
            return
        if self.stop.is_set():  # withdrawn while loading
            self.worker.repository.unload(spec.key, expected=served)
            self._release_artifact()
            return
        self.served, self.error = served, ""
        self.layouts = {}  # checked against the model loaded now
        heap.settle()  # the new session's objects join the frozen start-up heap, before traffic
        self.pull_stop = threading.Event()
        self.threads = []
        for i in range(self.worker.pullers):
            t = threading.Thread(target=self._pull_loop, name=f"pull-{spec.key}-{i}", daemon=True)
            t.start()
            self.threads.append(t)
        self.state = "ready"
        logger.info(
            "deployment %s (%s) ready on %s (asked for %s) in %.0f ms load + %.0f ms warm",
            spec.key,
            spec.label,
            served.model.provider,
            spec.device,
            served.model.load_ms,
            served.model.warm_ms,
        )

    def close(self) -> None:
        """Stop pulling and unload the model, unless the key already holds another one
        (a changed assignment loads its new model under the same key)."""
        self.stop.set()
        self.pull_stop.set()
        for t in self.threads:
            t.join(3)
        if self.served is not None:
            self.worker.repository.unload(self.spec.key, expected=self.served)
        self.state = "unloaded"
        self._release_artifact()

    def _waiting(self, why: str) -> None:
        self.error = why[:500]  # still loading: the heartbeat says what it waits for
        logger.warning("deployment %s (%s): %s", self.spec.key, self.spec.label, why)

    def _release_artifact(self) -> None:
        """Once unloaded, the artifact may leave the cache when it is over its budget."""
        with self.lock:
            source, self.artifact_source = self.artifact_source, ""
        if source:
            self.worker.artifacts.release(self.spec.artifact_sha256, source)

    def holds_cold(self) -> bool:
        """Unloaded under the memory budget (or being loaded again for a request): a
        request for it waits for the load instead of being refused."""
        return self.state == "cold" or (self.state == "loading" and self.cold_start)

    def evicted(self) -> None:
        """The repository unloaded the model to make room: stop pulling; the worker's cold
        watcher loads it again when a request for it arrives."""
        self.pull_stop.set()
        self.served = None
        if not self.stop.is_set():
            self.state = "cold"

    # -- serving

    def _pull_loop(self) -> None:
        client = self.worker.client
        queue = wire.queue_key(self.spec.key)
        limit = max(1, self.spec.max_batch_size)
        stop = self.pull_stop
        while not stop.is_set():
            try:
                frames = client.lpop(queue, limit)
                if not frames:
                    got = client.blpop([queue], timeout=1)
                    if got is None:
                        continue
                    frames = [got[1]]
            except _REDIS_ERRORS as exc:
                logger.warning("redis unreachable while pulling %s: %s", queue, exc)
                stop.wait(0.5)
                continue
            try:
                self._serve(client, frames)
            except _REDIS_ERRORS as exc:
                logger.warning("redis unreachable while replying for %s: %s", queue, exc)
            except Exception:  # noqa: BLE001 - one bad batch must not kill the puller
                logger.exception("puller for %s failed on a batch", queue)

    def _serve(self, client: redis.Redis, frames: list[bytes]) -> None:
        served = self.served
        if served is None or not served.ready:  # unloaded to make room meanwhile: back to the queue
            client.lpush(wire.queue_key(self.spec.key), *reversed(frames))
            return
        refusals: list[tuple[str, bytes]] = []
        taken: list[tuple[dict[str, Any], list[dict[str, np.ndarray]]]] = []
        bad = 0
        for frame in frames:
            try:
                header, groups = wire.decode_many(frame)
            except wire.FrameVersionMismatch as exc:
                refusal = self._refuse_version(exc)
                if refusal is not None:
                    refusals.append(refusal)
                continue
            except wire.FrameError as exc:
                bad += 1
                logger.warning("dropping a malformed request frame on %s: %s", self.spec.key, exc)
                continue
            if not header.get("wake"):  # a wake frame: a web process asked for a cold start only
                taken.append((header, groups))
        answers = self._intake(served, taken, len(frames), bad)
        if not answers and not refusals:
            return
        pipe = client.pipeline(transaction=False)
        for reply_to, body in refusals:
            pipe.rpush(reply_to, body)
            pipe.pexpire(reply_to, 60_000)
        provider = served.model.provider
        for reply_to, frame_deadline, many, jobs in answers:
            if all(job[0] is None and isinstance(job[1], DeadlineExceeded) for job in jobs):
                continue  # every request expired in the queue: no one waits for the reply
            ttl_ms = int(max(frame_deadline - time.time(), 0) * 1000) + 5000
            pipe.rpush(reply_to, self._reply_body(many, jobs, provider))
            pipe.pexpire(reply_to, ttl_ms)
        pipe.execute()

    def serve_direct(self, header: dict[str, Any], groups: list[dict[str, np.ndarray]], send: Any) -> bool:
        """A frame from the direct socket: submitted at once, its reply sent (by `send`) from
        the thread that finishes its last request. False when this worker does not hold the
        deployment ready (the web process then sends it through Redis)."""
        served = self.served
        if served is None or not served.ready:
            return False
        batcher = served.batcher
        if batcher is not None and batcher.queued() >= _SPILL_BATCHES * max(1, self.spec.max_batch_size):
            with self.lock:
                self.spilled += 1
            return False
        answers = self._intake(served, [(header, groups)], 1, 0)
        if not answers:
            send(wire.encode_frame({"ok": 0, "s": 400, "c": "bad_frame", "e": "malformed request frame"}))
            return True
        _, _, many, jobs = answers[0]
        provider = served.model.provider
        futures = [job[0] for job in jobs if job[0] is not None]
        if not futures:
            send(self._reply_body(many, jobs, provider))
            return True
        left = [len(futures)]
        lock = threading.Lock()

        def one_done(_: Any) -> None:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                try:
                    send(self._reply_body(many, jobs, provider))
                except Exception:  # noqa: BLE001 - the batcher's thread must live on
                    logger.exception("direct reply for %s failed", self.spec.key)

        for future in futures:
            future.add_done_callback(one_done)
        return True

    def _intake(
        self,
        served: ServedModel,
        taken: list[tuple[dict[str, Any], list[dict[str, np.ndarray]]]],
        frames: int,
        bad: int,
    ) -> list[tuple[str, float, bool, list[_Job]]]:
        """Submit the live requests of decoded frames to the batcher, all at once (under one
        lock and one wake-up of its thread, so that the requests pulled together run in as few
        ONNX Runtime calls as they fit); drop the expired ones unrun. Per frame: its reply key,
        deadline, whether it carries many requests (version 3's `g`), and per request its
        future or the error that answers it, and its deadline."""
        signature = served.signature
        now = time.time()
        answers: list[tuple[str, float, bool, list[_Job]]] = []
        expired = requests = 0
        submits: list[tuple[dict[str, np.ndarray], float]] = []
        places: list[tuple[list[_Job], int]] = []
        for header, groups in taken:
            try:
                frame_deadline = float(header["dl"])
                reply_to = str(header["r"])  # a frame without a reply key is malformed
                many = "g" in header
                deadlines = [float(d) for d in header["d"]] if many else [frame_deadline]
                if len(deadlines) != len(groups):
                    raise wire.FrameError(f"{len(deadlines)} deadlines for {len(groups)} requests")
            except (wire.FrameError, KeyError, TypeError, ValueError) as exc:
                bad += 1
                logger.warning("dropping a malformed request frame on %s: %s", self.spec.key, exc)
                continue
            jobs: list[_Job] = []
            for tensors, deadline in zip(groups, deadlines, strict=True):
                requests += 1
                remaining = deadline - now
                if remaining <= 0:  # its caller has given up (or is about to): never run it
                    expired += 1
                    jobs.append((None, DeadlineExceeded(f"{self.spec.label}: expired in the queue"), deadline))
                    continue
                try:
                    submits.append((self._fit(tensors, signature), remaining))
                except RuntimeErrorBase as exc:
                    jobs.append((None, exc, deadline))
                    continue
                places.append((jobs, len(jobs)))
                jobs.append((None, None, deadline))  # its future, once submitted below
            answers.append((reply_to, frame_deadline, many, jobs))
        if submits:
            for (jobs, i), future in zip(places, served.submit_many(submits), strict=True):
                jobs[i] = (future, None, jobs[i][2])
        with self.lock:
            self.pulled += requests
            self.frames += frames
            self.expired += expired
            self.bad_frames += bad
        return answers

    def _reply_body(self, many: bool, jobs: list[_Job], provider: str) -> bytes:
        """The reply frame for one request frame, once its requests' futures resolve."""
        results = [self._result(job) for job in jobs]
        if many:
            return wire.encode_many(
                {
                    "ok": 1,
                    "p": provider,
                    "w": self.worker.worker_id,
                    "e": [None if isinstance(r, tuple) else [r.status, r.code, r.message] for r in results],
                    "x": [r[1] if isinstance(r, tuple) else None for r in results],
                },
                [r[0] if isinstance(r, tuple) else {} for r in results],
            )
        if isinstance(results[0], tuple):
            reply: dict[str, Any] = {"ok": 1, "p": provider, "w": self.worker.worker_id}
            if results[0][1] is not None:  # rows in the ORT call, queue ms, model ms: for monitoring
                reply["b"], reply["q"], reply["m"] = results[0][1]
            return wire.encode_frame(reply, results[0][0])
        error = results[0]
        return wire.encode_frame(
            {"ok": 0, "s": error.status, "c": error.code, "e": error.message, "w": self.worker.worker_id}
        )

    def _fit(self, tensors: dict[str, np.ndarray], signature: Any) -> dict[str, np.ndarray]:
        """The request's tensors, once their names, datatypes and shapes fit the model.

        Validation happens once, on the web process: it checked the request against the
        deployment's signature (names, datatypes, shapes, row limit, NaN/Inf) before the
        frame left, and only web processes reach this Redis. A frame guarantees that each
        tensor is whole (its bytes match its datatype and shape). So the worker does not scan
        the values again; it checks the layout (a web process of another release, a model
        changed under the same key) once per distinct layout, not per request: a
        coalesced frame carries the same layout many times.
        """
        layout = tuple((name, arr.dtype.str, arr.shape) for name, arr in tensors.items())
        known = self.layouts.get(layout)
        if known is None:
            try:
                check_inputs(tensors, signature, max_batch_size=self.spec.max_batch_size, allow_non_finite=True)
                known = True
            except InputError as exc:
                known = exc
            if len(self.layouts) >= _LAYOUTS_KEPT:
                self.layouts.clear()
            self.layouts[layout] = known
        if known is not True:
            raise InputError(known.message)
        return tensors

    def _result(self, job: _Job) -> tuple[dict[str, np.ndarray], list[float] | None] | RuntimeErrorBase:
        """A request's outputs and timing once its future resolves, or the error that answers it."""
        future, error, deadline = job
        if future is None:
            assert error is not None
            return error
        try:
            outputs = future.result(timeout=max(deadline - time.time(), 0) + 1.0)
        except RuntimeErrorBase as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - includes the future's own timeout
            if time.time() >= deadline:
                return DeadlineExceeded(f"{self.spec.label}: no result before the deadline")
            return ModelExecutionError(f"{self.spec.label}: {exc}")
        timing = getattr(future, "timing", None)
        return outputs, None if timing is None else [timing[0], round(timing[1], 3), round(timing[2], 3)]

    def _refuse_version(self, exc: wire.FrameVersionMismatch) -> tuple[str, bytes] | None:
        """Log a request of another frame version (another release) and say so to its sender, if it can be told."""
        message = (
            f"a request frame of version {exc.version} reached this inference worker, which speaks frame "
            f"version {wire.FRAME_VERSION}: web processes and inference workers must run the same release"
        )
        with self.lock:
            self.version_refused += 1
            first = self.version_refused == 1 or self.version_refused % 1000 == 0
        if first:
            logger.error(
                "deployment %s (%s): %s (%d refused so far)",
                self.spec.key,
                self.spec.label,
                message,
                self.version_refused,
            )
        reply_to = exc.header.get("r")
        if not isinstance(reply_to, str):
            return None
        refusal = {
            "ok": 0,
            "s": 503,
            "c": "frame_version",
            "e": message,
            "w": self.worker.worker_id,
            "v": wire.FRAME_VERSION,
        }
        if exc.version == 1:  # a release before versioning reads only the old layout; it knows model_not_ready
            return reply_to, wire.encode_legacy_refusal({**refusal, "c": "model_not_ready"})
        return reply_to, wire.encode_frame(refusal)

    def report(self) -> dict[str, Any]:
        spec, served = self.spec, self.served  # served may be unloaded meanwhile
        out: dict[str, Any] = {
            "deployment_id": spec.deployment_id,
            "endpoint": spec.endpoint,
            "model": spec.model,
            "version": spec.version,
            "role": spec.role,
            "state": self.state,
            "ready": self.state == "ready",
            "pinned": bool(spec.pinned),
            "cold": self.holds_cold(),
            "device": spec.device,
            "provider": served.model.provider if served is not None else "",
            "error": self.error,
            "pulled": self.pulled,
            "frames": self.frames,
            "direct_spilled": self.spilled,
            "expired_dropped": self.expired,
            "bad_frames": self.bad_frames,
            "frame_version_refused": self.version_refused,
            "artifact": self.artifact_source,
        }
        stats = served.stats() if served is not None else None
        if stats is not None:
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
        artifacts: ArtifactSource | None = None,
        memory_budget_bytes: int = 0,
        direct: tuple[str, int] | None = ("127.0.0.1", 0),
        direct_advertise: str = "",
    ) -> None:
        self.device = device
        self.artifacts = artifacts or ArtifactSource(mode="shared", cache=ArtifactCache(_default_cache()))
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
        # The one owner of this worker's sessions and batchers, within its memory budget.
        self.repository = ModelRepository(budget_bytes=memory_budget_bytes, on_evict=self._on_evict)
        self.served: dict[str, Served] = {}
        self.peers_free: dict[str, int] = {}  # other live workers of this device: free model memory (bytes)
        self.started_at = time.time()
        self.stopping = threading.Event()
        self.orphaned = False  # serving without a desired state in Redis (see reconcile)
        # The direct socket web processes send frames to (workers/direct_server.py); None: Redis only.
        self.direct = DirectServer(direct, self._direct_frame, advertise=direct_advertise) if direct else None

    def _direct_frame(self, frame: bytes, send: Any) -> None:
        """A frame from the direct socket (its connection's thread): decoded, handed to its
        deployment, answered `not_here` when this worker does not hold that ready."""
        try:
            header, groups = wire.decode_many(frame)
        except wire.FrameVersionMismatch as exc:
            served = self.served.get(str(exc.header.get("k", "")))
            refusal = served._refuse_version(exc) if served is not None else None
            send(
                refusal[1]
                if refusal is not None
                else wire.encode_frame({"ok": 0, "s": 503, "c": "frame_version", "e": str(exc), "w": self.worker_id})
            )
            return
        except wire.FrameError as exc:
            logger.warning("dropping a malformed frame from the direct socket: %s", exc)
            send(wire.encode_frame({"ok": 0, "s": 400, "c": "bad_frame", "e": str(exc)[:200], "w": self.worker_id}))
            return
        served = self.served.get(str(header.get("k", "")))
        if served is None or not served.serve_direct(header, groups, send):
            send(
                wire.encode_frame(
                    {
                        "ok": 0,
                        "s": 503,
                        "c": wire.NOT_HERE,
                        "e": "not loaded on this worker, or its batcher is full: send it through the queue",
                        "w": self.worker_id,
                    }
                )
            )

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
            if key in wanted and wanted[key] != served.spec_json and _only_pin_changed(wanted[key], served.spec):
                served.spec = wire.spec_from_json(wanted[key])  # pinning is not a reload
                served.spec_json = wanted[key]
                self.repository.pin(key, served.spec.pinned)
            elif key not in wanted or wanted[key] != served.spec_json:
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
            place_here = self._place_here(spec)  # before it joins self.served (loads in progress count)
            served = Served(spec, self)
            served.spec_json = raw_spec
            self.served[key] = served
            if not place_here:
                served.state = "cold"  # no room here now; loaded on demand (by a worker with room, if any)
                logger.info("deployment %s (%s) assigned, cold here: no room under the memory budget", key, spec.label)
                continue
            logger.info("loading deployment %s (%s) on %s", key, spec.label, self.device)
            threading.Thread(target=served.load, name=f"load-{key}", daemon=True).start()

    # ------------------------------------------------------------ density

    def _free_bytes(self) -> int | None:
        """Room left under this worker's budget, counting loads in progress (None: no budget)."""
        free = self.repository.free_bytes()
        if free is None:
            return None
        loading = sum(self._estimate(s.spec) for s in self.served.values() if s.state == "loading")
        return free - loading

    def _estimate(self, spec: Any) -> int:
        """A deployment's expected model memory, from its artifact on the shared volume or,
        when the worker fetches artifacts, the copy in its cache (0 before the first fetch)."""
        if os.path.isfile(spec.artifact_path):
            return self.repository.estimate_bytes(spec.artifact_path)
        path = self.artifacts.cache.path(spec.artifact_sha256)
        return self.repository.estimate_bytes(str(path))

    def _place_here(self, spec: Any) -> bool:
        """Load a new assignment now? Pinned ones, and any that fits the room left under
        this worker's budget (so while there is room every worker holds a replica);
        otherwise it stays cold here and a request loads it on a worker with room."""
        free = self._free_bytes()
        return spec.pinned or free is None or free >= self._estimate(spec)

    def _watch_cold(self, served: Served) -> bool:
        """Take requests for a cold deployment? When this worker has room for it, or no
        live peer has (then this worker unloads its least recently used models for it)."""
        free = self._free_bytes()
        need = self._estimate(served.spec)
        if free is None or free >= need:
            return True
        return not any(peer_free >= need for peer_free in self.peers_free.values())

    def _on_evict(self, key: str) -> None:
        served = self.served.get(key)
        if served is not None:
            served.evicted()
            logger.info("deployment %s (%s) unloaded to make room; cold until its next request", key, served.spec.label)

    def cold_watch(self) -> None:
        """One thread: BLPOP over the queues of this worker's cold deployments; a request
        for one goes back to the head of its queue and the deployment is loaded (pullers
        then serve it), unloading the least recently used unpinned models if needed."""
        client = self.client
        while not self.stopping.is_set():
            cold = {
                wire.queue_key(k): s for k, s in list(self.served.items()) if s.state == "cold" and self._watch_cold(s)
            }
            if not cold:
                self.stopping.wait(0.2)
                continue
            try:
                got = client.blpop(list(cold), timeout=0.5)
                if got is None:
                    continue
                queue, frame = got[0].decode(), got[1]
                client.lpush(queue, frame)
            except _REDIS_ERRORS as exc:
                logger.warning("redis unreachable while watching cold queues: %s", exc)
                self.stopping.wait(0.5)
                continue
            served = cold[queue]
            if served.state == "cold" and not served.stop.is_set():
                served.state, served.cold_start = "loading", True
                logger.info("cold start of deployment %s (%s)", served.spec.key, served.spec.label)
                threading.Thread(target=served.load, name=f"load-{served.spec.key}", daemon=True).start()

    def _read_peers(self) -> None:
        """Free model memory of the other live workers of this device, from their heartbeats."""
        ids = [i.decode() for i in self.client.zrangebyscore(wire.WORKERS_KEY, time.time(), "+inf")]
        ids = [i for i in ids if i != self.worker_id]
        peers: dict[str, int] = {}
        if ids:
            for raw in self.client.mget([wire.heartbeat_key(i) for i in ids]):
                if not raw:
                    continue
                beat = orjson.loads(raw)
                memory = beat.get("memory") or {}
                if beat.get("device") == self.device and memory.get("budget_bytes"):
                    peers[str(beat.get("worker"))] = int(memory["budget_bytes"]) - int(memory.get("used_bytes", 0))
        self.peers_free = peers

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
            "frame_version": wire.FRAME_VERSION,
            "direct": self.direct.report() if self.direct is not None else None,
            "artifact_mode": self.artifacts.mode,
            "started_at": self.started_at,
            "ts": now,
            "deployments": deployments,
            "memory": self.repository.memory_report(),
        }
        pipe = self.client.pipeline(transaction=False)
        pipe.set(wire.heartbeat_key(self.worker_id), orjson.dumps(beat), px=wire.HEARTBEAT_TTL_MS)
        pipe.zadd(wire.WORKERS_KEY, {self.worker_id: expiry})
        if self.direct is not None:
            pipe.hset(wire.DIRECT_KEY, self.worker_id, orjson.dumps(self.direct.published()))
        pipe.zremrangebyscore(wire.WORKERS_KEY, "-inf", now - 60)
        for key, report in deployments.items():
            if report["ready"]:
                pipe.zadd(wire.warm_key(key), {self.worker_id: expiry})
            else:
                pipe.zrem(wire.warm_key(key), self.worker_id)
            pipe.zremrangebyscore(wire.warm_key(key), "-inf", now - 60)
            if report["cold"]:
                pipe.zadd(wire.cold_key(key), {self.worker_id: expiry})  # loadable here on demand
            else:
                pipe.zrem(wire.cold_key(key), self.worker_id)
            pipe.zremrangebyscore(wire.cold_key(key), "-inf", now - 60)
            load_ms = self.repository.expected_load_ms(key)
            if load_ms is not None:
                pipe.hset(wire.LOAD_MS_KEY, key, round(load_ms, 1))
        pipe.execute()
        write_batch_stats({m.model.name: m.batcher.stats() for m in self.repository.served() if m.batcher is not None})
        self._prune_direct(now)

    def _prune_direct(self, now: float) -> None:
        """Drop the `mh:direct` entries of workers gone for a minute (killed, so they never
        removed their own): web processes read the whole hash on every readiness check."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hkeys(wire.DIRECT_KEY)
        pipe.zrangebyscore(wire.WORKERS_KEY, now - 60, "+inf")
        published, live = pipe.execute()
        gone = set(published) - set(live)
        if gone:
            self.client.hdel(wire.DIRECT_KEY, *gone)

    def _forget_me(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(wire.heartbeat_key(self.worker_id))
        pipe.hdel(wire.DIRECT_KEY, self.worker_id)
        pipe.zrem(wire.WORKERS_KEY, self.worker_id)
        for key in self.served:
            pipe.zrem(wire.warm_key(key), self.worker_id)
            pipe.zrem(wire.cold_key(key), self.worker_id)
        pipe.execute()

    def run(self) -> None:
        logger.info(
            "inference worker %s on device %s (providers %s), %d pullers per deployment",
            self.worker_id,
            self.device,
            ", ".join(available_providers()),
            self.pullers,
        )
        self.artifacts.cache.sweep()
        if self.direct is not None:
            self.direct.start()
        last_beat = 0.0
        if self.repository.budget_bytes:
            threading.Thread(target=self.cold_watch, name="cold-watch", daemon=True).start()
        while not self.stopping.is_set():
            try:
                if self.repository.budget_bytes and time.monotonic() - last_beat >= wire.HEARTBEAT_INTERVAL_S:
                    self._read_peers()
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
        if self.direct is not None:  # after the drain: the replies of what it held went out on it
            self.direct.close()


def _only_pin_changed(raw: bytes, spec: Any) -> bool:
    try:
        wanted = wire.spec_from_json(raw)
    except Exception:  # noqa: BLE001 - a broken entry is handled as a change
        return False
    return wanted != spec and dataclasses.replace(wanted, pinned=spec.pinned) == spec


def _default_cache() -> str:
    return os.path.join(tempfile.gettempdir(), "modelhub-worker-artifacts")


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
    parser.add_argument(
        "--memory-budget",
        type=int,
        default=serving.worker_memory_budget(),
        help="bytes of loaded models (default: MODELHUB_WORKER_MEMORY_BUDGET_BYTES, else half the memory; 0: none)",
    )
    parser.add_argument(
        "--direct",
        default=env_str("MODELHUB_WORKER_DIRECT", "127.0.0.1:0") or "off",
        help="host:port of the direct socket web processes send frames to (port 0: any free one); off: Redis only",
    )
    parser.add_argument(
        "--direct-advertise",
        default=env_str("MODELHUB_WORKER_DIRECT_ADVERTISE"),
        help="host:port web processes reach the direct socket at (default: the bound address, this host's for 0.0.0.0)",
    )
    parser.add_argument("--log-level", default=log_level())
    parser.add_argument(
        "--artifacts",
        choices=ArtifactSource.MODES,
        default=env_str("MODELHUB_WORKER_ARTIFACTS", "auto") or "auto",
        help="auto: the shared volume if the file is there, else fetch by digest; fetch; shared",
    )
    parser.add_argument("--platform-url", default=env_str("MODELHUB_WORKER_PLATFORM_URL"))
    parser.add_argument("--artifact-cache", default=env_str("MODELHUB_WORKER_ARTIFACT_CACHE") or _default_cache())
    parser.add_argument(
        "--artifact-cache-bytes",
        type=int,
        default=env_int("MODELHUB_WORKER_ARTIFACT_CACHE_BYTES", 10 * 1024**3),
        help="disk budget of the artifact cache (0: none)",
    )
    args = parser.parse_args(argv)
    try:
        direct = parse_bind(args.direct)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.device == "gpu":
        preload_cuda_libraries()
    worker = InferenceWorker(
        device=args.device,
        redis_url=args.redis_url,
        pullers=args.pullers,
        intra_op_threads=args.intra_op_threads,
        worker_id=args.worker_id,
        artifacts=ArtifactSource(
            mode=args.artifacts,
            cache=ArtifactCache(args.artifact_cache, budget_bytes=args.artifact_cache_bytes),
            platform_url=args.platform_url,
            key=env_str("MODELHUB_WORKER_KEY"),  # not a flag: a secret does not belong in `ps`
        ),
        memory_budget_bytes=args.memory_budget,
        direct=direct,
        direct_advertise=args.direct_advertise,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stopping.set())
    heap.settle()
    worker.run()


if __name__ == "__main__":
    main()
