"""Per-request overhead of DynamicBatcher: `python -m inference.runtime.bench_batcher`.

Builds a model (identity, or MatMul+Relu with `--model matmul`) of FP32 [batch, width]
with one intra-op thread, then measures, per request:
- `direct`: LoadedModel.predict from one thread (the floor);
- `batcher`: DynamicBatcher.predict from one thread with no queue delay, so the
  difference is the batcher's own cost (submit, two thread hand-offs, split);
- `submit`: time the calling thread spends in `submit` alone;
- throughput of N threads through the batcher versus N threads calling directly.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from inference.runtime.batcher import DynamicBatcher, Outputs
from inference.runtime.session import LoadedModel


def _bench_model(directory: str, kind: str, width: int) -> LoadedModel:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])
    initializers = []
    if kind == "identity":
        nodes = [helper.make_node("Identity", ["x"], ["y"])]
    else:
        weight = np.random.default_rng(0).normal(size=(width, width)).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, "w"))
        nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    graph = helper.make_graph(nodes, kind, [x], [y], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = os.path.join(directory, f"{kind}.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    loaded = LoadedModel.load(path, intra_op_threads=1, name=kind)
    loaded.warm()
    return loaded


def _per_call_us(fn: Callable[[], object], n: int) -> float:
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(samples)


def _throughput(fn: Callable[[], object], threads: int, seconds: float) -> float:
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def worker(i: int) -> None:
        while time.monotonic() < stop:
            fn()
            counts[i] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--model", choices=["identity", "matmul"], default="identity")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="max_queue_delay_ms for the threaded run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        model = _bench_model(directory, args.model, args.width)
        inputs = {"x": np.ones((1, args.width), np.float32)}
        direct = _per_call_us(lambda: model.predict(inputs), args.requests)
        with DynamicBatcher(model, max_batch_size=64, max_queue_delay_ms=0) as batcher:
            batched = _per_call_us(lambda: batcher.predict(inputs), args.requests)

            futures: list[Future[Outputs]] = []
            started = time.perf_counter()
            for _ in range(args.requests):
                futures.append(batcher.submit(inputs))
                if len(futures) >= 512:
                    futures.pop(0).result()
            submit_us = (time.perf_counter() - started) / args.requests * 1e6
            for f in futures:
                f.result()

        with DynamicBatcher(model, max_batch_size=64, max_queue_delay_ms=args.delay_ms) as batcher:
            through_batcher = _throughput(lambda: batcher.predict(inputs), args.threads, args.seconds)
            stats = batcher.stats()
        through_direct = _throughput(lambda: model.predict(inputs), args.threads, args.seconds)

    print(f"model {args.model} width {args.width}")
    print(f"direct predict, 1 thread:        {direct:8.1f} us/request")
    print(f"batcher predict, 1 thread:       {batched:8.1f} us/request  (+{batched - direct:.1f} us)")
    print(f"submit+result pipelined:         {submit_us:8.1f} us/request")
    print(f"{args.threads} threads direct:               {through_direct:8.0f} requests/s")
    print(f"{args.threads} threads through the batcher:  {through_batcher:8.0f} requests/s (delay {args.delay_ms} ms)")
    print(f"mean rows per ORT call: {stats.mean_batch_rows:.1f}")


if __name__ == "__main__":
    main()
