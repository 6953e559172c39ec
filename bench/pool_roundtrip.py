#!/usr/bin/env python3
"""One request at a time: where a worker-pool request's time goes, without HTTP.

    .venv/bin/python bench/pool_roundtrip.py [--n 2000] [--rounds 3] [--dims 10,2]

Issue #13's c=1 goal compares the pool with in-process serving through the whole HTTP
stack, where everything in front of the model is the same for both. This takes the
front away and times only what differs, one call after another on one event loop:

- `in-process`: `ServedModel.submit_many` on a ModelRepository in this process (the
  batcher's thread hand-off and the ONNX Runtime call: what in-process serving pays);
- `direct`: `WorkerPoolTransport.infer_async` over the worker's direct socket;
- `redis`: the same through the deployment's Redis list (`MODELHUB_POOL_DIRECT=0`).

It starts a private redis-server and one `python -m workers.inference_worker --intra-op-threads 1`
(as bench/start_modelhub.sh's pool1 does), builds an MLP with the given layer widths (default
10 -> 2, the size of bench's tiny model), runs the three interleaved for `--rounds` and prints
the median of each round's p50 and p90 in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from gpu_check import mlp as build_mlp  # noqa: E402
from pool_scaling import pct, spec_for, start_redis  # noqa: E402

from inference.pool import WorkerPoolTransport  # noqa: E402
from inference.runtime.repository import ModelRepository  # noqa: E402


async def timed_calls(call, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        out.append((time.perf_counter() - started) * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="calls per path and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dims", default="10,2", help="the MLP's layer widths")
    parser.add_argument("--redis-server", default="redis-server")
    args = parser.parse_args()
    dims = tuple(int(d) for d in args.dims.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="mh-roundtrip-"))
    path = build_mlp(tmp / "model.onnx", dims)
    redis_proc, url = start_redis(args.redis_server, tmp)
    worker = subprocess.Popen(
        [sys.executable, "-m", "workers.inference_worker", "--redis-url", url, "--intra-op-threads", "1"],
        cwd=ROOT,
        stdout=open(tmp / "worker.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    spec = spec_for(1, path, 16, 0)
    repository = ModelRepository()
    try:
        direct, redis_only = WorkerPoolTransport(url), WorkerPoolTransport(url, direct=False)
        direct.ensure_loaded(spec)
        deadline = time.monotonic() + 60
        while direct.warm_workers(spec) < 1:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit(f"the worker did not warm the model; see {tmp / 'worker.log'}")
            time.sleep(0.1)
        served = repository.load("local", str(path), max_batch_size=16, max_queue_delay_ms=0, intra_op_threads=1)
        x = {"input": np.random.default_rng(1).standard_normal((1, dims[0])).astype(np.float32)}

        async def in_process() -> None:
            await asyncio.wrap_future(served.submit_many([(x, 5.0)])[0])

        paths = {
            "in-process": in_process,
            "direct": lambda: direct.infer_async(spec, x, timeout_s=5),
            "redis": lambda: redis_only.infer_async(spec, x, timeout_s=5),
        }

        async def run() -> dict[str, list[tuple[float, float]]]:
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
            for call in paths.values():  # warm connections and caches
                await timed_calls(call, 200)
            for r in range(args.rounds):
                order = list(paths)[r % 3 :] + list(paths)[: r % 3]
                for name in order:
                    times = await timed_calls(paths[name], args.n)
                    results[name].append((pct(times, 50), pct(times, 90)))
            return results

        results = asyncio.run(run())
    finally:
        repository.unload("local")
        worker.terminate()
        worker.wait(20)
        redis_proc.terminate()
    print(f"model {'->'.join(map(str, dims))}, {args.n} calls x {args.rounds} rounds, one at a time (us)")
    print(f"{'path':<11} {'p50':>8} {'p90':>8}   per-round p50")
    for name, rounds in results.items():
        p50 = statistics.median(r[0] for r in rounds)
        p90 = statistics.median(r[1] for r in rounds)
        print(f"{name:<11} {p50:8.0f} {p90:8.0f}   {[round(r[0]) for r in rounds]}")


if __name__ == "__main__":
    main()
