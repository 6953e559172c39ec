"""REST and gRPC side by side: N concurrent V2 infer calls of one row, for D seconds each.

    python bench/grpc_load.py --http 127.0.0.1:8000 --grpc 127.0.0.1:8001 --model tiny \\
        [--concurrency 16] [--seconds 10] [--rounds 3] [--key mh_app_...]

Against one server that speaks both, e.g.
`MODELHUB_GRPC_PORT=8001 MODELS_DIR=... bench/start_modelhub.sh tiny 8000` (config.serve
starts the gRPC front beside the web processes). One asyncio loop drives every protocol
the same way, so the client costs alike: gRPC through tritonclient's grpc.aio client
(raw_input_contents), REST over N keep-alive HTTP/1.1 connections written by hand on
asyncio streams (V2 JSON, as bench/harness.py sends it, and V2 binary tensors). The
protocols take turns within each round. Prints requests/s and p50/p99 latency per
protocol per round, then the medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import numpy as np
import orjson
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio

Call = Callable[[], Awaitable[None]]


class HttpConnection:
    """One keep-alive HTTP/1.1 connection: POST a body, read the answer (Content-Length only)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        if status != 200:
            raise RuntimeError(f"HTTP {status}")


def rest_calls(url: str, model: str, row: np.ndarray, key: str | None, n: int, binary: bool) -> list[Call]:
    host, _, port = url.rpartition(":")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, row.size]}
    if binary:
        raw = row.astype("<f4").tobytes()
        head = orjson.dumps(
            {
                "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
                "parameters": {"binary_data_output": True},
            }
        )
        body = head + raw
        headers = {**headers, "Inference-Header-Content-Length": str(len(head))}
    else:
        body = orjson.dumps({"inputs": [{**tensor, "data": row.tolist()}]})
        headers = {**headers, "Content-Type": "application/json"}
    path = f"/v2/models/{model}/infer"

    def make(conn: HttpConnection) -> Call:
        return lambda: conn.post(path, body, headers)

    return [make(HttpConnection(host, int(port))) for _ in range(n)]


def grpc_calls(
    url: str, model: str, row: np.ndarray, key: str | None, n: int
) -> tuple[list[Call], grpcaio.InferenceServerClient]:
    client = grpcaio.InferenceServerClient(url)
    headers = {"authorization": f"Bearer {key}"} if key else None
    tensor = grpcclient.InferInput("input", [1, row.size], "FP32")
    tensor.set_data_from_numpy(row.reshape(1, -1).astype(np.float32))

    async def call() -> None:
        await client.infer(model, [tensor], headers=headers)

    return [call] * n, client


async def drive(calls: list[Call], seconds: float) -> tuple[float, float, float]:
    """Each call in a loop of its own until time is up: (requests/s, p50 ms, p99 ms)."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def loop(call: Call) -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    for call in calls:  # warm every connection first
        await call()
    began = time.perf_counter()
    await asyncio.gather(*(loop(call) for call in calls))
    elapsed = time.perf_counter() - began
    quantiles = statistics.quantiles(latencies, n=100)
    return len(latencies) / elapsed, quantiles[49] * 1000, quantiles[98] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http", required=True, help="host:port of the REST front")
    parser.add_argument("--grpc", required=True, help="host:port of the gRPC front")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--key")
    args = parser.parse_args()
    row = np.random.default_rng(0).standard_normal(args.features).astype(np.float32)
    results: dict[str, list[tuple[float, float, float]]] = {"rest-json": [], "rest-binary": [], "grpc": []}
    for round_ in range(args.rounds):
        order = list(results)
        order = order[round_ % len(order) :] + order[: round_ % len(order)]
        for name in order:
            client = None
            if name == "grpc":
                calls, client = grpc_calls(args.grpc, args.model, row, args.key, args.concurrency)
            else:
                calls = rest_calls(args.http, args.model, row, args.key, args.concurrency, name == "rest-binary")
            figures = await drive(calls, args.seconds)
            if client is not None:
                await client.close()
            results[name].append(figures)
            print(
                f"round {round_ + 1} {name:12s} {figures[0]:8.0f} req/s"
                f"  p50 {figures[1]:6.2f} ms  p99 {figures[2]:6.2f} ms"
            )
    print(f"medians over {args.rounds} rounds, concurrency {args.concurrency}:")
    for name, runs in results.items():
        rps, p50, p99 = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"  {name:12s} {rps:8.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
