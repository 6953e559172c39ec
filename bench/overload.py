"""Overload: open-loop load at twice the capacity measured in the same run.

Drives one real DynamicBatcher over a real ONNX Runtime session (the in-process serving
core, no HTTP), in three phases:

1. capacity: a closed loop keeps the queue full for `--capacity-s` seconds; capacity is
   the rows answered per second.
2. overload: open-loop arrivals (a fixed schedule, not waiting on answers) at
   `--factor` x capacity for `--overload-s` seconds, each with a `--deadline-ms` deadline.
3. recovery: open-loop arrivals at half the capacity for `--recovery-s` seconds.

It prints one JSON object: capacity, goodput during the overload (answers within the
deadline per second), p50/p99 of answered requests, refused (503) and expired (504)
counts, and the recovery time: from the end of the overload to the first request after
which every request is answered within half the deadline. `--no-admission` runs the
same load with admission control off (the queue bound by count only), for contrast.

With `--url`, the same three phases run over HTTP against a running server instead
(`POST {url}/api/v1/endpoints/{endpoint}/predict`, keep-alive connections, asyncio):
200 is answered, 503 refused, 504 expired; the deadline is then the endpoint's timeout
(pass it as `--deadline-ms` so that goodput and recovery are judged against it).

    python3 bench/overload.py                        # defaults: 5 s + 10 s + 10 s
    python3 bench/overload.py --capacity-s 1 --overload-s 1 --recovery-s 1   # smoke
    python3 bench/overload.py --url http://127.0.0.1:8000 --endpoint iris --key KEY \
        --body '{"instances": [[5.1, 3.5, 1.4, 0.2]]}' --deadline-ms 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from inference.runtime.batcher import AdmissionPolicy, DynamicBatcher  # noqa: E402
from inference.runtime.errors import DeadlineExceeded, Overloaded  # noqa: E402
from inference.runtime.session import LoadedModel  # noqa: E402
from tests.onnx_models import slow_model  # noqa: E402


class Outcome:
    __slots__ = ("done", "kind", "sent")

    def __init__(self, sent: float) -> None:
        self.sent = sent
        self.done = 0.0
        self.kind = "pending"


def _watch(future: Future[Any], outcome: Outcome) -> None:
    def finished(f: Future[Any]) -> None:
        outcome.done = time.monotonic()
        error = f.exception()
        if error is None:
            outcome.kind = "answered"
        elif isinstance(error, DeadlineExceeded):
            outcome.kind = "expired"
        else:
            outcome.kind = f"error:{type(error).__name__}"

    future.add_done_callback(finished)


def capacity(batcher: DynamicBatcher, x: np.ndarray, seconds: float, depth: int) -> float:
    """Rows per second with the queue kept `depth` requests deep (closed loop)."""
    inflight: list[Future[Any]] = []
    answered = 0
    end = time.monotonic() + seconds
    started = time.monotonic()
    while time.monotonic() < end:
        while len(inflight) < depth:
            inflight.append(batcher.submit({"x": x}))
        inflight[0].result()
        inflight.pop(0)
        answered += 1
    for future in inflight:
        future.result()
        answered += 1
    return answered / (time.monotonic() - started)


def open_loop(batcher: DynamicBatcher, x: np.ndarray, rate: float, seconds: float, deadline_s: float) -> list[Outcome]:
    """Send at a fixed schedule whatever the answers; a late sender is reported, not hidden."""
    outcomes: list[Outcome] = []
    interval = 1.0 / rate
    start = time.monotonic()
    n = 0
    while True:
        due = start + n * interval
        if due - start >= seconds:
            break
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        outcome = Outcome(time.monotonic())
        outcomes.append(outcome)
        try:
            _watch(batcher.submit({"x": x}, timeout_s=deadline_s), outcome)
        except Overloaded:
            outcome.kind, outcome.done = "refused", time.monotonic()
        n += 1
    return outcomes


class HttpTarget:
    """A minimal HTTP/1.1 keep-alive client for one predict URL (stdlib asyncio only)."""

    def __init__(self, url: str, endpoint: str, key: str, body: bytes, max_connections: int) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        path = f"{parts.path.rstrip('/')}/api/v1/endpoints/{endpoint}/predict"
        headers = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Content-Type: application/json"]
        if key:
            headers.append(f"X-API-Key: {key}")
        headers.append(f"Content-Length: {len(body)}")
        self.request = ("\r\n".join(headers) + "\r\n\r\n").encode() + body
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.open = 0
        self.max_connections = max_connections

    async def send(self, timeout_s: float) -> str:
        reused = bool(self.idle)
        outcome = await self._send_once(timeout_s)
        if reused and outcome == "error:IncompleteReadError":
            # The server closed a keep-alive connection that sat idle past its keep-alive
            # timeout (uvicorn: 5 s) before this request reached it: send it again on a new
            # connection, as HTTP clients do. A fresh connection closed mid-answer still counts.
            outcome = await self._send_once(timeout_s, fresh=True)
        return outcome

    async def _send_once(self, timeout_s: float, *, fresh: bool = False) -> str:
        if self.idle and not fresh:
            conn = self.idle.pop()
        elif self.open >= self.max_connections:
            return "client_saturated"  # not sent: the generator, not the server, ran out
        else:
            self.open += 1
            try:
                conn = await asyncio.open_connection(self.host, self.port)
            except OSError:
                self.open -= 1
                return "error:connect"
        reader, writer = conn
        try:
            writer.write(self.request)
            status, retry_after, keep = await asyncio.wait_for(self._response(reader), timeout_s)
        except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
            self.open -= 1
            writer.close()
            return f"error:{type(exc).__name__}"
        if keep:
            self.idle.append(conn)
        else:
            self.open -= 1
            writer.close()
        if status == 200:
            return "answered"
        if status == 503:
            return "refused" if retry_after else "refused_without_retry_after"
        if status == 504:
            return "expired"
        return f"http_{status}"

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bool, bool]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        await reader.readexactly(int(fields.get("content-length", "0")))
        return status, "retry-after" in fields, fields.get("connection", "").lower() != "close"


async def http_capacity(target: HttpTarget, seconds: float, connections: int) -> float:
    answered = 0
    end = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal answered
        while time.monotonic() < end:
            if await target.send(30.0) == "answered":
                answered += 1

    started = time.monotonic()
    await asyncio.gather(*(loop() for _ in range(connections)))
    return answered / (time.monotonic() - started)


async def http_open_loop(
    target: HttpTarget, rate: float, seconds: float, deadline_s: float
) -> tuple[list[Outcome], list[asyncio.Future[None]]]:
    """Start one request per arrival of a fixed schedule; returns them and their tasks."""
    outcomes: list[Outcome] = []
    tasks: list[asyncio.Future[None]] = []

    async def one(outcome: Outcome) -> None:
        outcome.kind = await target.send(deadline_s + 10)
        outcome.done = time.monotonic()

    start = time.monotonic()
    n = 0
    while n / rate < seconds:
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        outcome = Outcome(time.monotonic())
        outcomes.append(outcome)
        tasks.append(asyncio.ensure_future(one(outcome)))
        n += 1
    return outcomes, tasks


async def http_run(
    args: argparse.Namespace, deadline_s: float
) -> tuple[float, float, list[Outcome], float, list[Outcome]]:
    target = HttpTarget(args.url, args.endpoint, args.key, args.body.encode(), args.max_connections)
    cap = await http_capacity(target, args.capacity_s, args.connections)
    rate = cap * args.factor
    overload, pending = await http_open_loop(target, rate, args.overload_s, deadline_s)
    overload_end = time.monotonic()
    after, more = await http_open_loop(target, cap / 2, args.recovery_s, deadline_s)
    await asyncio.gather(*pending, *more)
    return cap, rate, overload, overload_end, after


def summary(outcomes: list[Outcome], seconds: float, deadline_s: float) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for o in outcomes:
        kinds[o.kind] = kinds.get(o.kind, 0) + 1
    latencies = sorted((o.done - o.sent) * 1000 for o in outcomes if o.kind == "answered")
    in_time = sum(1 for ms in latencies if ms <= deadline_s * 1000)

    def pct(p: float) -> float | None:
        return round(latencies[min(int(p * len(latencies)), len(latencies) - 1)], 1) if latencies else None

    return {
        "sent": len(outcomes),
        "outcomes": kinds,
        "goodput_per_s": round(in_time / seconds, 1),
        "answered_p50_ms": pct(0.50),
        "answered_p99_ms": pct(0.99),
    }


def recovery_s(overload_end: float, after: list[Outcome], deadline_s: float) -> float | None:
    """Seconds from the end of the overload to the first request after which every request
    was answered within half the deadline; None if that never happened."""
    good_from: float | None = None
    for o in after:
        good = o.kind == "answered" and (o.done - o.sent) <= deadline_s / 2
        if not good:
            good_from = None
        elif good_from is None:
            good_from = o.sent
    return None if good_from is None else round(max(good_from - overload_end, 0.0), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capacity-s", type=float, default=5.0)
    parser.add_argument("--overload-s", type=float, default=10.0)
    parser.add_argument("--recovery-s", type=float, default=10.0)
    parser.add_argument("--factor", type=float, default=2.0, help="overload rate as a multiple of capacity")
    parser.add_argument("--deadline-ms", type=float, default=5000.0, help="each request's deadline (endpoint timeout)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-queue-delay-ms", type=float, default=2.0)
    parser.add_argument("--depth", type=int, default=16, help="MatMul layers of the model: its cost per row")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--no-admission", action="store_true", help="count-bounded queue only, for contrast")
    parser.add_argument("--url", help="drive a running server over HTTP instead of an in-process batcher")
    parser.add_argument("--endpoint", default="iris")
    parser.add_argument("--key", default="", help="the endpoint's API key (X-API-Key)")
    parser.add_argument("--body", default='{"instances": [[5.1, 3.5, 1.4, 0.2]]}')
    parser.add_argument("--connections", type=int, default=64, help="HTTP: closed-loop connections for capacity")
    parser.add_argument("--max-connections", type=int, default=1024, help="HTTP: most open connections")
    args = parser.parse_args()
    deadline_s = args.deadline_ms / 1000.0
    if args.url:
        cap, rate, overload, overload_end, after = asyncio.run(http_run(args, deadline_s))
        report(args, cap, rate, overload, overload_end, after, {})
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        Path(path).write_bytes(slow_model(depth=args.depth, width=args.width))
        model = LoadedModel.load(path, name="overload", version="1", intra_op_threads=args.threads)
        model.warm()
    policy = AdmissionPolicy(enabled=not args.no_admission)
    batcher = DynamicBatcher(
        model, max_batch_size=args.max_batch_size, max_queue_delay_ms=args.max_queue_delay_ms, admission=policy
    )
    x = np.ones((1, args.width), dtype=np.float32)
    try:
        cap = capacity(batcher, x, args.capacity_s, depth=4 * args.max_batch_size)
        rate = cap * args.factor
        overload = open_loop(batcher, x, rate, args.overload_s, deadline_s)
        overload_end = time.monotonic()
        after = open_loop(batcher, x, cap / 2, args.recovery_s, deadline_s)
        # Let everything still queued finish or expire before counting.
        limit = time.monotonic() + deadline_s + 5
        while any(o.kind == "pending" for o in overload + after) and time.monotonic() < limit:
            time.sleep(0.05)
        stats = batcher.stats()
    finally:
        batcher.close(drain=False)
    batcher_stats = {"shed": stats.shed, "rejected": stats.rejected, "expired": stats.expired}
    report(args, cap, rate, overload, overload_end, after, batcher_stats)


def report(
    args: argparse.Namespace,
    cap: float,
    rate: float,
    overload: list[Outcome],
    overload_end: float,
    after: list[Outcome],
    batcher_stats: dict[str, int],
) -> None:
    deadline_s = args.deadline_ms / 1000.0
    result = {
        "target": args.url or "in-process batcher",
        "admission": None if args.url else not args.no_admission,
        "capacity_per_s": round(cap, 1),
        "offered_per_s": round(rate, 1),
        "deadline_ms": args.deadline_ms,
        "overload": summary(overload, args.overload_s, deadline_s),
        "after": summary(after, args.recovery_s, deadline_s),
        "recovery_s": recovery_s(overload_end, after, deadline_s),
        "goodput_over_capacity": None,
        "batcher": batcher_stats,
        "settings": vars(args),
    }
    result["goodput_over_capacity"] = round(result["overload"]["goodput_per_s"] / cap, 2) if cap else None
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
