"""Worker-pool placement, client side: a direct Redis request/reply path to inference workers.

Not Celery's result backend (a task publish + result poll costs several round trips and
a JSON/pickle of every float). One request costs ONE round trip from a web process:

    pipeline(RPUSH mh:q:d7 <frame>, PEXPIRE mh:q:d7, BLPOP mh:r:<id> <timeout>)

The frame (inference/pool_protocol.py) carries the request id, its reply key and its
absolute deadline (epoch seconds: workers drop requests that have expired before they
run them), then the tensors as raw bytes. Competing workers BLPOP/LPOP the same list,
so load is balanced and a dead worker simply stops taking requests. A request popped
by a worker that then dies is lost; its caller gets 504 at its deadline. If at the
deadline the request is still in the queue (LREM removes it), no worker ever took it:
that answers 503 (no worker serving), which is safe to retry elsewhere.

On an event loop (`infer_async`, the ASGI front) requests are coalesced: one frame per
deployment is in flight from a loop at a time, and the requests that arrive meanwhile go
together in the next one (frame version 3: one frame, many requests, one reply frame split
back per request; docs/serving-workers.md). Each keeps its own deadline and answer.

On an event loop a frame goes straight to a worker that holds the deployment warm when the
worker offers a direct socket (workers/direct_server.py; the address and token it publishes
in `mh:direct`): one connection per event loop and worker, many frames in flight on it, the
reply on the same connection. That skips Redis's two hops per frame; Redis stays the source
of who is warm (the 0.5 s readiness check below) and the fallback: a worker that cannot be
reached, or no longer holds the deployment (`not_here`), gets the frame through its Redis
list instead. A connection lost with frames on it answers their callers 503 at once
(the worker died or is restarting); a frame that outlives a caller's deadline answers 504.
MODELHUB_POOL_DIRECT=0 turns it off for a web process.

Redis unreachable: connects are bounded (MODELHUB_POOL_CONNECT_TIMEOUT, default 1 s)
and so is every read, so a request answers 503 with Retry-After instead of hanging.
No live worker holds the deployment warm (its `mh:warm:` set is empty: a worker
restarting, Redis back empty while inference/reconcile.py re-assigns it): 503 with
Retry-After at once, not after the deadline. Both checks are cached for 0.5 s per process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
import weakref
from typing import Any, NamedTuple

import numpy as np
import redis

from config.env import env_bool, env_float, env_str
from config.errors import ServiceUnavailable
from inference import pool_protocol as wire
from inference.runtime.errors import (
    ColdStart,
    DeadlineExceeded,
    InputError,
    MemoryBudgetExceeded,
    ModelExecutionError,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    RuntimeErrorBase,
)
from inference.runtime.repository import cold_start_seconds
from inference.spec import DeploymentSpec, InferResult

logger = logging.getLogger("modelhub.pool")
_ERRORS: dict[str, type[RuntimeErrorBase]] = {
    cls.code: cls
    for cls in (
        InputError,
        ModelNotFound,
        ModelNotReady,
        Overloaded,
        DeadlineExceeded,
        ModelExecutionError,
        ColdStart,
        MemoryBudgetExceeded,
    )
}
_REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
# A worker whose direct socket could not be reached is not tried again for this long.
_DIRECT_RETRY_S = 2.0
# How long a reply or a queue outlives the request deadline before Redis drops it.
_EXPIRE_GRACE_MS = 5000
_READY_CACHE_S = 0.5


def _setting(name: str, default: Any) -> Any:
    try:
        from django.conf import settings

        return getattr(settings, name, default)
    except Exception:  # settings not configured: a worker, a script
        return default


def _timeout(name: str, default: float) -> float:
    """Django setting, else environment variable, else the default."""
    return float(_setting(name, None) or env_float(name, default))


def _redis_url() -> str:
    url = _setting("MODELHUB_POOL_REDIS_URL", "") or _setting("REDIS_URL", "") or env_str("REDIS_URL")
    if not url:
        raise ServiceUnavailable("worker-pool placement needs Redis (REDIS_URL is not set)", retry_after_s=5)
    return url


_clients: dict[tuple[int, str], redis.Redis] = {}
_clients_lock = threading.Lock()


def redis_client(url: str | None = None) -> redis.Redis:
    """One connection pool per process and URL (a forked child builds its own)."""
    url = url or _redis_url()
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                connect = _timeout("MODELHUB_POOL_CONNECT_TIMEOUT", 1.0)
                read = _timeout("MODELHUB_POOL_SOCKET_TIMEOUT", 5.0)
                pool = redis.ConnectionPool.from_url(
                    url,
                    socket_connect_timeout=connect,
                    socket_timeout=read,
                    socket_keepalive=True,
                    health_check_interval=0,
                    max_connections=int(_setting("MODELHUB_POOL_MAX_CONNECTIONS", 256)),
                )
                client = redis.Redis(connection_pool=pool)
                _clients[key] = client
    return client


_async_clients: dict[tuple[int, int, str], Any] = {}


def _async_client(url: str) -> Any:
    """One asyncio connection pool per process, event loop and URL."""
    import asyncio

    import redis.asyncio as aioredis

    key = (os.getpid(), id(asyncio.get_running_loop()), url)
    client = _async_clients.get(key)
    if client is None:
        pool = aioredis.ConnectionPool.from_url(
            url,
            socket_connect_timeout=_timeout("MODELHUB_POOL_CONNECT_TIMEOUT", 1.0),
            socket_timeout=_timeout("MODELHUB_POOL_SOCKET_TIMEOUT", 5.0),
            max_connections=int(_setting("MODELHUB_POOL_MAX_CONNECTIONS", 256)),
        )
        client = _async_clients[key] = aioredis.Redis(connection_pool=pool)
    return client


def _unavailable(exc: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"the inference worker pool is unreachable (Redis: {str(exc).strip()[:160] or type(exc).__name__})",
        retry_after_s=2,
    )


def _no_worker(spec: DeploymentSpec) -> str:
    return (
        f'no inference worker holds endpoint "{spec.endpoint}" ({spec.label}) warm right now; '
        f'it is being (re)assigned to the workers of device "{spec.device}"'
    )


def _error_from_reply(header: dict[str, Any]) -> RuntimeErrorBase:
    cls = _ERRORS.get(header.get("c", ""), ModelExecutionError)
    return cls(str(header.get("e", "inference worker failed")))


def _decode_reply(frame: bytes, spec: DeploymentSpec) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A worker's reply; one of another frame version (another release) is a clear 503, never misread."""
    try:
        return wire.decode_frame(frame)
    except wire.FrameVersionMismatch as exc:
        message = (
            f'endpoint "{spec.endpoint}" ({spec.label}): the inference worker speaks frame version '
            f"{exc.version} and this web process speaks frame version {wire.FRAME_VERSION}; web processes "
            "and inference workers must run the same release"
        )
        logger.error("%s (worker %s)", message, exc.header.get("w", "?"))
        raise ServiceUnavailable(
            message,
            retry_after_s=30,
            details={"worker_frame_version": exc.version, "web_frame_version": wire.FRAME_VERSION},
        ) from None


def _decode_many_reply(frame: bytes, spec: DeploymentSpec) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
    """`_decode_reply` for a frame that answers many requests."""
    try:
        return wire.decode_many(frame)
    except wire.FrameVersionMismatch:
        _decode_reply(frame, spec)  # raises the 503 that names both versions
        raise


# Frames one process keeps in flight per deployment before it coalesces what arrives.
_FRAMES_IN_FLIGHT = 1
# The most requests one frame carries (the worker's batcher cuts them into its batches).
_MAX_FRAME_REQUESTS = 256
# Requests waiting behind a frame that has been out this long are sent in a frame of their
# own: a worker killed with the frame (its callers get 504) must not hold up the others.
_STALLED_S = 0.05


class _Call:
    """One request waiting in a lane for its frame, then for its part of the reply."""

    __slots__ = ("future", "inputs", "started", "timeout_s")

    def __init__(self, inputs: dict[str, np.ndarray], started: float, timeout_s: float, future: Any) -> None:
        self.inputs, self.started, self.timeout_s, self.future = inputs, started, timeout_s, future


class _Lane:
    """One deployment's requests on one event loop: the frames in flight and what waits for the next."""

    __slots__ = ("in_flight", "sent_at", "tasks", "timer", "waiting")

    def __init__(self) -> None:
        self.in_flight = 0
        self.sent_at = 0.0
        self.waiting: list[_Call] = []
        self.timer: Any = None
        self.tasks: set[Any] = set()


class _Peer(NamedTuple):
    """A worker's direct socket, as it publishes it in `mh:direct`."""

    worker: str
    address: str
    token: str


def _peers(warm: list[bytes], published: dict[bytes, bytes]) -> tuple[_Peer, ...]:
    """The direct sockets of the warm workers (those that publish one)."""
    import orjson

    peers = []
    for raw_id in warm:
        entry = published.get(raw_id)
        if not entry:
            continue
        try:
            info = orjson.loads(entry)
            peers.append(_Peer(raw_id.decode(), str(info["a"]), str(info["t"])))
        except (ValueError, KeyError, TypeError):
            continue
    return tuple(peers)


class _DirectConnection(asyncio.Protocol):
    """One event loop's connection to one worker's direct socket: frames out with a call id,
    replies back in any order, each to its call's future. Lost: every pending call is told."""

    def __init__(self, peer: _Peer) -> None:
        self.peer = peer
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.closed = False
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._greeted = False
        self._next_id = 0
        self.opening: asyncio.Task[None] | None = None

    async def open(self, loop: asyncio.AbstractEventLoop) -> None:
        host, _, port = self.peer.address.rpartition(":")
        try:
            await loop.create_connection(lambda: self, host.strip("[]"), int(port))
        except (OSError, ValueError, asyncio.CancelledError) as exc:  # ValueError: a malformed address
            if not self.opened.done():
                self.opened.set_exception(ConnectionError(str(exc) or type(exc).__name__))
                self.opened.exception()  # retrieved: no "never retrieved" warning

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass
        if self.closed:  # given up on (connect timeout) before the connect finished
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        transport.write(wire.DIRECT_HELLO + bytes([wire.DIRECT_VERSION]) + self.peer.token.encode())

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._greeted:
            if buffer[:1] != wire.DIRECT_OK:
                self._fail(ConnectionError("the worker refused the handshake"))
                return
            del buffer[:1]
            self._greeted = True
            if not self.opened.done():
                self.opened.set_result(None)
        envelope = wire.DIRECT_ENVELOPE
        start = 0
        while len(buffer) - start >= envelope.size:
            length, call_id = envelope.unpack_from(buffer, start)
            end = start + envelope.size + length
            if len(buffer) < end:
                break
            future = self.pending.pop(call_id, None)
            if future is not None and not future.done():
                future.set_result(bytes(buffer[start + envelope.size : end]))
            start = end
        if start:
            del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection closed{f': {exc}' if exc else ''}"))

    def _fail(self, error: ConnectionError) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(error)
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def send(self, frame: bytes) -> tuple[int, asyncio.Future[bytes]]:
        """Write a frame; its call id and the future of its reply. ConnectionError when closed."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionError("closed")
        self._next_id += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending[self._next_id] = future
        self.transport.write(wire.DIRECT_ENVELOPE.pack(len(frame), self._next_id) + frame)
        return self._next_id, future

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed"))
            self.opened.exception()
        elif self.opening is not None and not self.opening.done():
            self.opening.cancel()


class WorkerPoolTransport:
    """Serves deployments placed on inference workers; one instance per web process is enough."""

    def __init__(self, url: str | None = None, *, direct: bool | None = None) -> None:
        """`direct`: use workers' direct sockets (None: the MODELHUB_POOL_DIRECT setting)."""
        self._url = url
        # deployment key -> (when checked, None if warm else why not, cold-start ms, the warm
        # workers' direct sockets): a fresh exception per request is raised from it
        # (re-raising one instance would grow its traceback).
        self._ready_cache: dict[str, tuple[float, str | None, float | None, tuple[_Peer, ...]]] = {}
        if direct is None:
            direct = bool(_setting("MODELHUB_POOL_DIRECT", env_bool("MODELHUB_POOL_DIRECT", True)))
        self._direct = direct
        # event loop -> worker address -> its direct connection; address -> not before (monotonic)
        self._connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _DirectConnection]] = (
            weakref.WeakKeyDictionary()
        )
        self._unreachable: dict[str, float] = {}
        # event loop -> deployment key -> its lane (requests coalesced per loop, in infer_async)
        self._lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Lane]] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def client(self) -> redis.Redis:
        return redis_client(self._url)

    # ---------------------------------------------------------------- control

    def ensure_loaded(self, spec: DeploymentSpec) -> None:
        """Assign the deployment to every worker of its device class (they load and warm it)."""
        try:
            self.client.hset(
                wire.assign_key(spec.device), mapping={spec.key: wire.spec_to_json(spec), wire.ASSIGN_MARKER: 1}
            )
        except _REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc
        self._ready_cache.pop(spec.key, None)

    def unload(self, spec: DeploymentSpec) -> None:
        """Withdraw the assignment; workers unload it within a second, queued requests fail."""
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(wire.assign_key(spec.device), wire.ASSIGN_MARKER, 1)  # empty means "none", not "unknown"
            pipe.hdel(wire.assign_key(spec.device), spec.key)
            pipe.execute()
        except _REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc
        self._ready_cache.pop(spec.key, None)

    def warm_workers(self, spec: DeploymentSpec) -> int:
        """How many live workers report this deployment loaded and warm."""
        try:
            return int(self.client.zcount(wire.warm_key(spec.key), time.time(), "+inf"))
        except _REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc

    def ready(self, spec: DeploymentSpec) -> bool:
        """At least one live heartbeat reports the deployment warm, or holds it cold (loaded
        on its next request under a memory budget); cached for 0.5 s."""
        return self._cold(spec)[0] is None

    def _ask_ready(self, pipe: Any, spec: DeploymentSpec) -> None:
        """The readiness questions, into a pipeline (blocking or asyncio): answered by `_served_state`."""
        now = time.time()
        pipe.zrangebyscore(wire.warm_key(spec.key), now, "+inf")
        pipe.zcount(wire.cold_key(spec.key), now, "+inf")
        pipe.hget(wire.LOAD_MS_KEY, spec.key)
        if self._direct:
            pipe.hgetall(wire.DIRECT_KEY)

    def _served_state(
        self, answers: list[Any], spec: DeploymentSpec
    ) -> tuple[str | None, float | None, tuple[_Peer, ...]]:
        """(None if served else why not, the expected cold-start ms, the warm workers' direct sockets)."""
        warm, cold, load_ms, *direct = answers
        if warm:
            return None, None, _peers(warm, direct[0]) if direct else ()
        if cold > 0:  # unloaded under a worker's memory budget: a request loads it
            return None, float(load_ms or 0.0), ()
        return _no_worker(spec), None, ()

    def direct_peers(self, spec: DeploymentSpec) -> tuple[_Peer, ...]:
        """The direct sockets of the workers that held the deployment warm at the last
        readiness check (empty: send through Redis)."""
        cached = self._ready_cache.get(spec.key)
        return cached[3] if cached is not None else ()

    def _cold(self, spec: DeploymentSpec) -> tuple[ServiceUnavailable | None, float | None]:
        """(the refusal to raise or None, the expected cold-start ms when no worker holds it
        warm but one holds it cold).

        Cached per deployment for 0.5 s, the refusals too: while no worker serves it (a
        worker restarting, Redis back empty and the reconciler re-assigning), a request is
        refused at once instead of queueing until its deadline.
        """
        now = time.monotonic()
        cached = self._ready_cache.get(spec.key)
        if cached is None or now - cached[0] >= _READY_CACHE_S:
            peers: tuple[_Peer, ...] = ()
            try:
                pipe = self.client.pipeline(transaction=False)
                self._ask_ready(pipe, spec)
                why, cold_ms, peers = self._served_state(pipe.execute(), spec)
            except _REDIS_ERRORS as exc:
                why, cold_ms = _unavailable(exc).message, None
            except ServiceUnavailable as exc:
                why, cold_ms = exc.message, None
            cached = self._ready_cache[spec.key] = (now, why, cold_ms, peers)
        return (None if cached[1] is None else ServiceUnavailable(cached[1], retry_after_s=2)), cached[2]

    async def _cold_async(self, spec: DeploymentSpec) -> tuple[ServiceUnavailable | None, float | None]:
        """`_cold` on the event loop (redis.asyncio; the same cache)."""
        now = time.monotonic()
        cached = self._ready_cache.get(spec.key)
        if cached is None or now - cached[0] >= _READY_CACHE_S:
            peers: tuple[_Peer, ...] = ()
            try:
                client = _async_client(self._url or _redis_url())
                async with client.pipeline(transaction=False) as pipe:
                    self._ask_ready(pipe, spec)
                    why, cold_ms, peers = self._served_state(await pipe.execute(), spec)
            except _REDIS_ERRORS as exc:
                why, cold_ms = _unavailable(exc).message, None
            except ServiceUnavailable as exc:
                why, cold_ms = exc.message, None
            cached = self._ready_cache[spec.key] = (now, why, cold_ms, peers)
        return (None if cached[1] is None else ServiceUnavailable(cached[1], retry_after_s=2)), cached[2]

    def _cold_start(self, spec: DeploymentSpec, cold_ms: float | None, timeout_s: float) -> ColdStart | None:
        """None when the request may wait for a cold start (no worker holds it warm, one
        holds it cold) or needs none; else wake a worker and return the 503 to raise."""
        if cold_ms is None or cold_ms / 1000.0 < timeout_s:
            return None
        try:  # a wake frame: the worker that takes it loads the deployment, answers nothing
            self.client.rpush(
                wire.queue_key(spec.key), wire.encode_frame({"id": "", "dl": time.time() + 60, "r": "", "wake": 1})
            )
        except _REDIS_ERRORS as exc:
            return _unavailable(exc)  # type: ignore[return-value]
        return ColdStart(
            f'endpoint "{spec.endpoint}" ({spec.label}) was unloaded on the inference workers to make room for '
            f"other models; reloading it takes about {cold_ms:.0f} ms, more than the request's deadline of "
            f"{timeout_s * 1000:.0f} ms",
            retry_after_s=cold_start_seconds(cold_ms),
        )

    # ---------------------------------------------------------------- the hot path

    def infer(self, spec: DeploymentSpec, inputs: dict[str, np.ndarray], *, timeout_s: float) -> InferResult:
        refusal, cold_ms = self._cold(spec)
        if refusal is not None:
            raise refusal
        if cold_ms is not None and (late := self._cold_start(spec, cold_ms, timeout_s)) is not None:
            raise late
        request_id = uuid.uuid4().hex
        reply = wire.reply_key(request_id)
        queue = wire.queue_key(spec.key)
        started = time.monotonic()
        deadline_epoch = time.time() + timeout_s
        frame = wire.encode_frame({"id": request_id, "dl": deadline_epoch, "r": reply}, inputs)
        client = self.client
        # Block at most until the deadline, and below the socket read timeout.
        read_timeout = float(client.connection_pool.connection_kwargs.get("socket_timeout") or 5.0)
        wait_cap = max(read_timeout - 0.25, 0.05)
        try:
            pipe = client.pipeline(transaction=False)
            pipe.rpush(queue, frame)
            pipe.pexpire(queue, int(timeout_s * 1000) + _EXPIRE_GRACE_MS)
            pipe.blpop([reply], timeout=max(min(timeout_s, wait_cap), 0.001))
            depth, _, popped = pipe.execute()
            while popped is None:
                remaining = timeout_s - (time.monotonic() - started)
                if remaining <= 0.001:
                    raise self._deadline(client, queue, frame, spec, timeout_s)
                popped = client.blpop([reply], timeout=min(remaining, wait_cap))
        except _REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc
        del depth
        header, outputs = _decode_reply(popped[1], spec)
        if not header.get("ok"):
            raise _error_from_reply(header)
        return InferResult(
            outputs=outputs,
            batch_rows=header.get("b"),
            queue_ms=header.get("q"),
            model_ms=header.get("m"),
            provider=header.get("p", ""),
            extra={"worker": header.get("w", ""), "round_trip_ms": (time.monotonic() - started) * 1000.0},
        )

    async def infer_async(
        self, spec: DeploymentSpec, inputs: dict[str, np.ndarray], *, timeout_s: float
    ) -> InferResult:
        """`infer` for an event loop (inference/asgi.py), coalesced: while a frame for the
        deployment is in flight from this process, the requests that arrive wait in its
        lane and go together in the next frame (one round trip, one batch on the worker)."""
        refusal, cold_ms = await self._cold_async(spec)
        if refusal is not None:
            raise refusal
        if cold_ms is not None and (late := self._cold_start(spec, cold_ms, timeout_s)) is not None:
            raise late  # (the wake frame goes with a blocking client: the rare path)
        loop = asyncio.get_running_loop()
        lanes = self._lanes.get(loop)
        if lanes is None:
            lanes = self._lanes[loop] = {}
        lane = lanes.get(spec.key)
        if lane is None:
            lane = lanes[spec.key] = _Lane()
        call = _Call(inputs, time.monotonic(), timeout_s, loop.create_future())
        lane.waiting.append(call)
        if lane.in_flight < _FRAMES_IN_FLIGHT:
            self._launch(lane, spec, loop)
        elif lane.timer is None:
            self._arm(lane, spec, loop)
        return await call.future  # type: ignore[no-any-return]

    def _launch(self, lane: _Lane, spec: DeploymentSpec, loop: asyncio.AbstractEventLoop) -> None:
        """Send what waits in the lane as one frame, in a task of its own (a cancelled caller
        must not take the others' round trip with it)."""
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        calls, lane.waiting = lane.waiting[:_MAX_FRAME_REQUESTS], lane.waiting[_MAX_FRAME_REQUESTS:]
        lane.in_flight += 1
        lane.sent_at = time.monotonic()
        task = loop.create_task(self._fly(lane, spec, calls, loop))
        lane.tasks.add(task)
        task.add_done_callback(lane.tasks.discard)
        if lane.waiting:  # more than one frame holds: the rest go next, or when this one stalls
            self._arm(lane, spec, loop)

    def _arm(self, lane: _Lane, spec: DeploymentSpec, loop: asyncio.AbstractEventLoop) -> None:
        """Requests wait behind a frame in flight; if it does not come back within
        _STALLED_S (a worker killed with it, a slow model), send them anyway."""
        now = time.monotonic()
        first_deadline = min(c.started + c.timeout_s for c in lane.waiting)
        delay = max(min(lane.sent_at + _STALLED_S, first_deadline) - now, 0.0)
        lane.timer = loop.call_later(delay, self._unstall, lane, spec, loop)

    def _unstall(self, lane: _Lane, spec: DeploymentSpec, loop: asyncio.AbstractEventLoop) -> None:
        lane.timer = None
        if lane.waiting:
            self._launch(lane, spec, loop)

    async def _fly(
        self, lane: _Lane, spec: DeploymentSpec, calls: list[_Call], loop: asyncio.AbstractEventLoop
    ) -> None:
        try:
            await self._round_trip(spec, calls)
        except asyncio.CancelledError:  # the loop is shutting down
            for call in calls:
                call.future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every caller gets an answer, whatever happened
            error = _unavailable(exc) if isinstance(exc, _REDIS_ERRORS) else exc
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(error)
        finally:
            lane.in_flight -= 1
            if lane.waiting and lane.in_flight < _FRAMES_IN_FLIGHT:
                self._launch(lane, spec, loop)

    async def _round_trip(self, spec: DeploymentSpec, calls: list[_Call]) -> None:
        """One frame for `calls` (straight to a worker when one offers its direct socket, else
        through Redis), its reply split back into each call's future, each call answered by
        its own deadline at the latest."""
        peers = self.direct_peers(spec)
        if peers:
            connection = await self._connection(peers)
            if connection is not None:
                rest = await self._direct_round_trip(connection, spec, calls)
                if not rest:
                    return
                calls = rest  # the worker no longer holds it ready: through Redis
        await self._redis_round_trip(spec, calls)

    async def _connection(self, peers: tuple[_Peer, ...]) -> _DirectConnection | None:
        """An open connection to one of `peers`: the one with the fewest frames in flight
        from this loop (a hung worker collects them, so the others get the new ones)."""
        loop = asyncio.get_running_loop()
        connections = self._connections.get(loop)
        if connections is None:
            connections = self._connections[loop] = {}
        now = time.monotonic()
        best: _DirectConnection | None = None
        for peer in peers:
            connection = connections.get(peer.address)
            if connection is None or connection.closed:
                if self._unreachable.get(peer.address, 0.0) > now:
                    continue
                connection = connections[peer.address] = _DirectConnection(peer)
            if best is None or len(connection.pending) < len(best.pending):
                best = connection
        if best is None:
            return None
        if not best.opened.done():
            if best.opening is None:  # one connect per connection, however many frames wait for it
                best.opening = loop.create_task(best.open(loop))
            try:
                timeout = _timeout("MODELHUB_POOL_CONNECT_TIMEOUT", 1.0)
                await asyncio.wait_for(asyncio.shield(best.opened), timeout=timeout)
            except (TimeoutError, OSError, ConnectionError) as exc:
                logger.warning(
                    "inference worker %s: direct socket %s unreachable (%s); through Redis",
                    best.peer.worker,
                    best.peer.address,
                    exc,
                )
                self._unreachable[best.peer.address] = time.monotonic() + _DIRECT_RETRY_S
                best.close()
                if connections.get(best.peer.address) is best:
                    del connections[best.peer.address]
                return None
        elif best.opened.exception() is not None or best.closed:
            return None
        return best

    async def _direct_round_trip(
        self, connection: _DirectConnection, spec: DeploymentSpec, calls: list[_Call]
    ) -> list[_Call]:
        """`calls` in one frame on a worker's direct socket; returns the calls to send
        through Redis instead (all of them when the worker does not hold the deployment)."""
        now, epoch = time.monotonic(), time.time()
        deadlines = [epoch + c.started + c.timeout_s - now for c in calls]
        frame = wire.encode_many(
            {"r": "", "k": spec.key, "dl": max(deadlines), "d": deadlines}, [c.inputs for c in calls]
        )
        try:
            call_id, reply = connection.send(frame)
        except ConnectionError:
            return calls  # closed since it was chosen: nothing was sent
        open_calls = list(zip(calls, deadlines, strict=True))
        try:
            while True:
                timeout = max(min(d for _, d in open_calls) - time.time(), 0.0)
                done, _ = await asyncio.wait((reply,), timeout=timeout)
                if done:
                    break
                epoch = time.time()
                for call, d in open_calls:
                    if d - epoch <= 0.001 and not call.future.done():
                        call.future.set_exception(self._late(spec, call.timeout_s, queued=False))
                open_calls = [(c, d) for c, d in open_calls if not c.future.done()]
                if not open_calls:
                    return []
            body = reply.result()
        except ConnectionError as exc:
            error = ServiceUnavailable(
                f'endpoint "{spec.endpoint}" ({spec.label}): the connection to inference worker '
                f"{connection.peer.worker} was lost with the request on it ({exc}); the worker stopped or restarted",
                retry_after_s=1,
            )
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(error)
            return []
        finally:
            connection.pending.pop(call_id, None)
        header, groups = _decode_many_reply(body, spec)
        if header.get("c") == wire.NOT_HERE:
            return [c for c in calls if not c.future.done()]
        self._answer(spec, calls, header, groups, via="direct")
        return []

    async def _redis_round_trip(self, spec: DeploymentSpec, calls: list[_Call]) -> None:
        """One frame for `calls` through the deployment's Redis list."""
        queue = wire.queue_key(spec.key)
        now, epoch = time.monotonic(), time.time()
        deadlines = [epoch + c.started + c.timeout_s - now for c in calls]
        frame_deadline = max(deadlines)
        reply = wire.reply_key(uuid.uuid4().hex)
        frame = wire.encode_many({"r": reply, "dl": frame_deadline, "d": deadlines}, [c.inputs for c in calls])
        client = _async_client(self._url or _redis_url())
        wait_cap = max(float(client.connection_pool.connection_kwargs.get("socket_timeout") or 5.0) - 0.25, 0.05)
        open_calls = list(zip(calls, deadlines, strict=True))
        async with client.pipeline(transaction=False) as pipe:
            pipe.rpush(queue, frame)
            pipe.pexpire(queue, int((frame_deadline - epoch) * 1000) + _EXPIRE_GRACE_MS)
            pipe.blpop([reply], timeout=max(min(min(deadlines) - epoch, wait_cap), 0.001))
            _, _, popped = await pipe.execute()
        while popped is None:
            # Answer the calls whose deadline passed; the rest wait on.
            epoch = time.time()
            late = [(c, d) for c, d in open_calls if d - epoch <= 0.001 and not c.future.done()]
            open_calls = [(c, d) for c, d in open_calls if d - epoch > 0.001 and not c.future.done()]
            if late:
                if open_calls:  # still queued: the worker will drop these unrun (their deadline is in the frame)
                    queued = await client.lpos(queue, frame) is not None
                else:  # the last ones: take the frame back if no worker took it
                    queued = bool(await client.lrem(queue, 1, frame))
                for call, _ in late:
                    call.future.set_exception(self._late(spec, call.timeout_s, queued=queued))
            if not open_calls:
                return
            next_deadline = min(d for _, d in open_calls)
            popped = await client.blpop([reply], timeout=max(min(next_deadline - epoch, wait_cap), 0.001))
        header, groups = _decode_many_reply(popped[1], spec)
        self._answer(spec, calls, header, groups, via="redis")

    def _answer(
        self,
        spec: DeploymentSpec,
        calls: list[_Call],
        header: dict[str, Any],
        groups: list[dict[str, np.ndarray]],
        *,
        via: str,
    ) -> None:
        """A reply frame split back into each call's future (`via`: direct or redis, in its extra)."""
        if "g" not in header:  # a refusal of the whole frame
            error = _error_from_reply(header) if not header.get("ok") else ModelExecutionError("reply without requests")
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(error)
            return
        answered = time.monotonic()
        errors, timings = header.get("e") or [], header.get("x") or []
        provider, worker = header.get("p", ""), header.get("w", "")
        for i, call in enumerate(calls):
            if call.future.done():  # answered as late, or its caller went away
                continue
            error = errors[i] if i < len(errors) else [500, "model_error", "no answer for this request"]
            if error is not None:
                cls = _ERRORS.get(error[1], ModelExecutionError)
                call.future.set_exception(cls(str(error[2])))
                continue
            timing = timings[i] if i < len(timings) and timings[i] else (None, None, None)
            call.future.set_result(
                InferResult(
                    outputs=groups[i],
                    batch_rows=timing[0],
                    queue_ms=timing[1],
                    model_ms=timing[2],
                    provider=provider,
                    extra={"worker": worker, "round_trip_ms": (answered - call.started) * 1000.0, "via": via},
                )
            )

    def _late(self, spec: DeploymentSpec, timeout_s: float, *, queued: bool) -> RuntimeErrorBase | ServiceUnavailable:
        if queued:
            return ServiceUnavailable(
                f'no inference worker took the request for endpoint "{spec.endpoint}" '
                f"({spec.label}) within its deadline of {timeout_s * 1000:.0f} ms; is a worker "
                f'for device "{spec.device}" running?',
                retry_after_s=2,
            )
        return DeadlineExceeded(
            f'endpoint "{spec.endpoint}" ({spec.label}): no answer from the inference worker '
            f"within the deadline of {timeout_s * 1000:.0f} ms"
        )

    def _deadline(
        self, client: redis.Redis, queue: str, frame: bytes, spec: DeploymentSpec, timeout_s: float
    ) -> RuntimeErrorBase | ServiceUnavailable:
        # Still queued means no worker ever took it: take it back so it never runs late.
        try:
            removed = client.lrem(queue, 1, frame)
        except _REDIS_ERRORS:
            removed = 0
        return self._late(spec, timeout_s, queued=bool(removed))


_transport: WorkerPoolTransport | None = None


def worker_pool_transport() -> WorkerPoolTransport:
    """The process-wide transport (one Redis connection pool per process)."""
    global _transport
    if _transport is None:
        _transport = WorkerPoolTransport()
    return _transport


def worker_status(client: redis.Redis | None = None) -> list[dict[str, Any]]:
    """Every live worker's last heartbeat (for health, metrics and the dashboard)."""
    import orjson

    client = client or redis_client()
    ids = [i.decode() for i in client.zrangebyscore(wire.WORKERS_KEY, time.time(), "+inf")]
    if not ids:
        return []
    beats = client.mget([wire.heartbeat_key(i) for i in ids])
    return [orjson.loads(b) for b in beats if b]
