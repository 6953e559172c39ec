"""What monitoring costs a prediction: throughput with metrics (+ sampling) on vs off.

The serving path (inference/runtime) is not on main yet, so this measures in-process what
it will do per request: one ONNX Runtime call on a tiny model (10 features -> 2 classes,
batch 1) plus, in the "on" variants, building a PredictionRecord and calling record(), with
the background flusher writing to Redis (REDIS_URL, if set) every 2 s as in production.

Variants, interleaved round by round so that the machine's state hits all of them alike:
  off           ORT call only
  metrics       + record() with latency/batch/queue/model times and the outputs
  sampling      + inputs for drift at 5 % and the request/response body at 1 %
  sampling-all  + inputs and bodies at 100 % (worst case)
It also reports record()'s own cost per call (no ORT) for each variant.

With --served the call goes through the serving core on main (inference.runtime's
ModelRepository with the dynamic batcher, max batch 8, 1 ms delay) instead of a bare session:
use it with --threads 4 or more so that batches form.

Usage: python3 bench/metrics_overhead.py [--rounds 5] [--n 20000] [--threads 1] [--served]
(Set DJANGO_SETTINGS_MODULE=config.settings and REDIS_URL as for the app.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from inference.telemetry.recorder import PredictionRecord, recorder  # noqa: E402
from monitoring.flusher import ensure_started, flusher  # noqa: E402

BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP32", "data": [0.5] * 10}]}).encode()
RESPONSE = b'{"outputs": [{"name": "label", "shape": [1], "datatype": "INT64", "data": [1]}]}'
VARIANTS = {"off": None, "metrics": (0.0, 0.0), "sampling": (0.05, 0.01), "sampling-all": (1.0, 1.0)}


def tiny_model_bytes() -> bytes:
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [10, 2], rng.normal(size=20).astype(np.float32).tolist())
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["logits"]),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 10])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def session_predict() -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(tiny_model_bytes(), options, providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)[0]


def served_predict(tmp: str) -> Any:
    from inference.runtime.repository import ModelRepository

    path = Path(tmp) / "tiny.onnx"
    path.write_bytes(tiny_model_bytes())
    model = ModelRepository().load(
        "bench", str(path), max_batch_size=8, max_queue_delay_ms=1.0, name="tiny", version="1"
    )
    return lambda feeds: model.predict(feeds, timeout_s=10)["label"]


def run(predict: Any, variant: str, n: int, *, with_model: bool) -> float:
    rates = VARIANTS[variant]
    if rates is not None:
        recorder.default_drift_rate, recorder.default_payload_rate = rates
    x = np.full((1, 10), 0.5, dtype=np.float32)
    label = np.array([1])
    started = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        outputs = {"label": predict({"x": x})} if with_model else {"label": label}
        if rates is not None:
            recorder.record(
                PredictionRecord(
                    endpoint="bench",
                    deployment="tiny:1",
                    role="primary",
                    latency_ms=(time.perf_counter() - t0) * 1000,
                    ok=True,
                    batch_rows=1,
                    queue_ms=0.0,
                    model_ms=0.01,
                    inputs={"x": x},
                    outputs=outputs,
                    payload=BODY,
                    response=RESPONSE,
                )
            )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--served", action="store_true", help="through inference.runtime's batcher")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="metrics-overhead-")
    session = served_predict(tmp) if args.served else session_predict()
    recorder.record(PredictionRecord("bench", "tiny:1", "primary", 0.1, True))  # starts the flusher
    ensure_started()
    rps: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cost_us: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        order = list(VARIANTS)[r % len(VARIANTS) :] + list(VARIANTS)[: r % len(VARIANTS)]
        for variant in order:
            results: list[float] = []

            def worker(variant: str = variant, results: list[float] = results) -> None:
                results.append(run(session, variant, args.n, with_model=True))

            threads = [threading.Thread(target=worker) for _ in range(args.threads)]
            wall = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rps[variant].append(args.n * args.threads / (time.perf_counter() - wall))
            cost_us[variant].append(run(session, variant, args.n, with_model=False) / args.n * 1e6)
    flusher.flush()
    print(
        f"# metrics overhead ({'serving core, batcher' if args.served else 'bare ORT session'}): "
        f"{args.rounds} rounds x {args.n} requests x {args.threads} thread(s); "
        f"flusher mode {'redis' if flusher.redis_url else 'database'}; dropped {flusher.dropped}"
    )
    print("| variant | predictions/s (median) | vs off | loop cost per call, no ORT (median us) |")
    print("| --- | --- | --- | --- |")
    base = statistics.median(rps["off"])
    for variant in VARIANTS:
        median = statistics.median(rps[variant])
        print(
            f"| {variant} | {median:,.0f} | {100 * (median / base - 1):+.1f} % | "
            f"{statistics.median(cost_us[variant]):.2f} |"
        )


if __name__ == "__main__":
    main()
