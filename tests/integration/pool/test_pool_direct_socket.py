"""The direct socket: an event-loop web process sends a deployment's frames straight to a
worker that holds it warm, and falls back to the Redis queue when it cannot. Real inference
worker processes, real Redis, real sockets."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
import pytest

from config.errors import ServiceUnavailable
from inference import pool_protocol as wire
from inference.pool import redis_client, worker_status
from inference.runtime.errors import DeadlineExceeded
from tests.integration.pool.conftest import (
    assert_each_answer_is_its_own,
    deployment_report,
    mlp_model,
    pool_spec,
    wait_until,
)

pytestmark = [pytest.mark.integration]

# A worker that takes frames from its direct socket and never answers them (a hung worker).
_HUNG_ON_DIRECT = (
    "import time, workers.inference_worker as m\n"
    "m.Served.serve_direct = lambda self, header, groups, send: time.sleep(600) or True\n"
    "m.main()"
)


def _run(make: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 60) -> Any:
    # In a thread of its own: the browser tests' Playwright keeps an event loop running in
    # the main thread for the whole session, and asyncio.run refuses to nest.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result(timeout=timeout)


def _published(worker_count: int = 1) -> list[dict[str, Any]]:
    entries = redis_client().hgetall(wire.DIRECT_KEY)
    live = {b["worker"] for b in worker_status()}
    return [orjson.loads(v) for k, v in entries.items() if k.decode() in live][:worker_count]


def _accepted_connections() -> int:
    """Direct connections the live worker has accepted, once its heartbeat counts any."""
    beat = wait_until(
        lambda: [b for b in worker_status() if (b.get("direct") or {}).get("accepted")],
        timeout=10,
        what="the heartbeat to count the direct connection",
    )[0]
    return int(beat["direct"]["accepted"])


def _warm(transport: Any, inference_workers: Any, tmp_path: Any, *, max_batch_size: int = 16, **worker: Any) -> Any:
    """A deployment of the small mlp that one real worker (started with `worker`) holds warm."""
    path = mlp_model(tmp_path / "mlp.onnx")
    spec = pool_spec(path, max_batch_size=max_batch_size, max_queue_delay_ms=1)
    transport.ensure_loaded(spec)
    inference_workers(**worker)
    wait_until(lambda: transport.ready(spec), timeout=60, what="the model to be warm")
    return spec, path


def test_frames_go_straight_to_the_worker_and_each_request_gets_its_own_rows(transport, inference_workers, tmp_path):
    spec, path = _warm(transport, inference_workers, tmp_path)
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((1 + i % 3, 16)).astype(np.float32) for i in range(64)]

    async def calls() -> list[Any]:
        return await asyncio.gather(*[transport.infer_async(spec, {"input": x}, timeout_s=20) for x in inputs])

    answers = _run(calls)

    assert_each_answer_is_its_own(path, inputs, answers)
    assert {a.extra["via"] for a in answers} == {"direct"}
    assert _accepted_connections() >= 1


def test_a_worker_with_the_direct_socket_off_is_served_through_redis(transport, inference_workers, tmp_path):
    spec, _ = _warm(transport, inference_workers, tmp_path, args=["--direct", "off"])
    x = np.ones((2, 16), np.float32)

    async def calls() -> list[Any]:
        return await asyncio.gather(*[transport.infer_async(spec, {"input": x}, timeout_s=20) for _ in range(8)])

    answers = _run(calls)
    assert {a.extra["via"] for a in answers} == {"redis"}
    assert not _published()


def test_an_unreachable_direct_socket_falls_back_to_redis_at_once(transport, inference_workers, tmp_path):
    # The worker tells web processes an address where nothing listens (a firewall, a wrong
    # advertise setting): the connect is refused and the request goes through Redis.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    spec, _ = _warm(transport, inference_workers, tmp_path, args=["--direct-advertise", f"127.0.0.1:{closed_port}"])
    x = np.ones((1, 16), np.float32)

    async def call() -> tuple[Any, float]:
        started = time.monotonic()
        answer = await transport.infer_async(spec, {"input": x}, timeout_s=20)
        return answer, time.monotonic() - started

    answer, seconds = _run(call)
    assert answer.extra["via"] == "redis"
    assert seconds < 5


def _request_frame(key: str) -> bytes:
    deadline = time.time() + 10
    return wire.encode_many(
        {"r": "", "k": key, "dl": deadline, "d": [deadline]}, [{"input": np.ones((1, 16), np.float32)}]
    )


def _connect(token: bytes) -> socket.socket:
    """A raw connection to the live worker's direct socket, its hello (with `token`) sent."""
    host, _, port = _published()[0]["a"].rpartition(":")
    conn = socket.create_connection((host, int(port)), timeout=5)
    conn.sendall(wire.DIRECT_HELLO + bytes([wire.DIRECT_VERSION]) + token)
    return conn


def _call(conn: socket.socket, call_id: int, frame: bytes) -> tuple[int, dict[str, Any]]:
    """One frame on an open connection: the call id and header of its reply."""
    conn.sendall(wire.DIRECT_ENVELOPE.pack(len(frame), call_id) + frame)
    head = conn.recv(wire.DIRECT_ENVELOPE.size, socket.MSG_WAITALL)
    length, answered = wire.DIRECT_ENVELOPE.unpack(head)
    header, _ = wire.decode_frame(conn.recv(length, socket.MSG_WAITALL))
    return answered, header


def test_a_connection_without_the_workers_token_is_refused_and_runs_nothing(transport, inference_workers, tmp_path):
    spec, _ = _warm(transport, inference_workers, tmp_path)
    with _connect(b"0" * wire.DIRECT_TOKEN_BYTES) as conn:
        frame = _request_frame(spec.key)
        conn.sendall(wire.DIRECT_ENVELOPE.pack(len(frame), 1) + frame)
        assert conn.recv(64) == b""  # closed without a word
    time.sleep(wire.HEARTBEAT_INTERVAL_S + 0.5)
    assert [r["pulled"] for r in deployment_report(spec)] == [0]


def test_frames_for_no_deployment_here_and_malformed_frames_get_answers_and_the_connection_serves_on(
    transport, inference_workers, tmp_path
):
    spec, _ = _warm(transport, inference_workers, tmp_path)
    with _connect(_published()[0]["t"].encode()) as conn:
        assert conn.recv(1) == wire.DIRECT_OK
        assert _call(conn, 7, _request_frame("d0-nothing"))[1]["c"] == wire.NOT_HERE
        call_id, header = _call(conn, 8, b"\x89MHF not a frame")
        assert (call_id, header["ok"], header["s"], header["c"]) == (8, 0, 400, "bad_frame")
        no_deadlines = wire.encode_many(
            {"r": "", "k": spec.key, "dl": time.time() + 10}, [{"input": np.ones((1, 16), np.float32)}]
        )
        assert _call(conn, 9, no_deadlines)[1]["c"] == "bad_frame"
        call_id, header = _call(conn, 10, _request_frame(spec.key))  # the same connection still serves
    assert call_id == 10 and header["ok"] == 1


def test_a_killed_workers_direct_socket_entry_is_pruned_by_the_live_ones(transport, inference_workers, tmp_path):
    # A worker killed with -9 never removes its entry; web processes read the whole hash.
    redis_client().hset(wire.DIRECT_KEY, "killed-long-ago", orjson.dumps({"a": "127.0.0.1:1", "t": "x"}))
    _warm(transport, inference_workers, tmp_path)
    wait_until(
        lambda: not redis_client().hexists(wire.DIRECT_KEY, "killed-long-ago"),
        timeout=10,
        what="the stale entry to be pruned",
    )
    assert len(_published()) == 1  # the live worker's own entry stays


def test_a_worker_killed_with_frames_on_its_socket_answers_503_at_once_not_at_the_deadline(
    transport, inference_workers, tmp_path
):
    spec, _ = _warm(transport, inference_workers, tmp_path, code=_HUNG_ON_DIRECT)
    (hung,) = inference_workers.started
    x = np.ones((1, 16), np.float32)

    async def calls() -> list[tuple[BaseException | None, float]]:
        async def one() -> tuple[BaseException | None, float]:
            started = time.monotonic()
            try:
                await transport.infer_async(spec, {"input": x}, timeout_s=30)
                return None, time.monotonic() - started
            except Exception as exc:  # noqa: BLE001
                return exc, time.monotonic() - started

        tasks = [asyncio.ensure_future(one()) for _ in range(4)]
        await asyncio.sleep(1.0)  # on the worker's socket, unanswered
        hung.kill()
        return await asyncio.gather(*tasks)

    outcomes = _run(calls)
    assert all(isinstance(error, ServiceUnavailable) for error, _ in outcomes), outcomes
    assert "connection to inference worker" in outcomes[0][0].message
    assert max(seconds for _, seconds in outcomes) < 10  # the deadline was 30 s


def test_a_hung_worker_answers_504_by_the_deadline(transport, inference_workers, tmp_path):
    spec, _ = _warm(transport, inference_workers, tmp_path, code=_HUNG_ON_DIRECT)

    async def call() -> tuple[BaseException | None, float]:
        started = time.monotonic()
        try:
            await transport.infer_async(spec, {"input": np.ones((1, 16), np.float32)}, timeout_s=1.0)
            return None, time.monotonic() - started
        except Exception as exc:  # noqa: BLE001
            return exc, time.monotonic() - started

    error, seconds = _run(call)
    assert isinstance(error, DeadlineExceeded), error
    assert 0.9 < seconds < 4


# A worker whose every batch takes 20 ms more: its batcher's queue fills under a burst.
_SLOW_BATCHES = (
    "import time, inference.runtime.batcher as b, workers.inference_worker as m\n"
    "run = b.DynamicBatcher._run\n"
    "b.DynamicBatcher._run = lambda self, taken: time.sleep(0.02) or run(self, taken)\n"
    "m.main()"
)


def test_frames_for_a_worker_whose_batcher_is_full_go_through_the_redis_queue(transport, inference_workers, tmp_path):
    # The queue is what an autoscaler watches (platform/k8s/keda) and where any worker can
    # take a request: the direct socket must not hide a backlog from it.
    spec, path = _warm(transport, inference_workers, tmp_path, max_batch_size=2, code=_SLOW_BATCHES)
    rng = np.random.default_rng(5)
    inputs = [rng.standard_normal((1, 16)).astype(np.float32) for _ in range(80)]

    async def calls() -> list[Any]:
        first = [asyncio.ensure_future(transport.infer_async(spec, {"input": x}, timeout_s=30)) for x in inputs[:40]]
        await asyncio.sleep(0.2)  # the first burst waits in the worker's batcher
        second = [transport.infer_async(spec, {"input": x}, timeout_s=30) for x in inputs[40:]]
        return await asyncio.gather(*first, *second)

    answers = _run(calls)

    assert_each_answer_is_its_own(path, inputs, answers)
    assert {a.extra["via"] for a in answers} == {"direct", "redis"}
    report = wait_until(
        lambda: [r for r in deployment_report(spec) if r.get("pulled") == len(inputs)],
        timeout=10,
        what="the heartbeat to count the requests",
    )[0]
    assert report["direct_spilled"] >= 1


def test_one_event_loop_opens_one_connection_to_a_worker_for_all_its_deployments(
    transport, inference_workers, tmp_path
):
    path = mlp_model(tmp_path / "mlp.onnx")
    specs = [pool_spec(path, max_batch_size=16, max_queue_delay_ms=1) for _ in range(3)]
    for spec in specs:
        transport.ensure_loaded(spec)
    inference_workers()
    wait_until(lambda: all(transport.ready(s) for s in specs), timeout=60, what="the models to be warm")
    x = np.ones((1, 16), np.float32)

    async def calls() -> list[Any]:  # the first frames of three lanes race for the one connection
        return await asyncio.gather(*[transport.infer_async(s, {"input": x}, timeout_s=20) for s in specs * 8])

    answers = _run(calls)
    assert {a.extra["via"] for a in answers} == {"direct"}
    assert _accepted_connections() == 1
