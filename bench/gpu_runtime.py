#!/usr/bin/env python3
"""Device-side proof + measurements for docs/gpu.md (run from the repo root).

python3 bench/gpu_runtime.py probe MODEL DEVICE      # one LoadedModel.load, no preload_dlls: which provider?
python3 bench/gpu_runtime.py main MODELDIR OUTJSON [SECONDS]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.getcwd())

import numpy as np  # noqa: E402


def probe(model: str, device: str) -> None:
    from inference.runtime.session import LoadedModel, available_providers

    m = LoadedModel.load(model, device=device)
    print(
        json.dumps(
            {"preload_dlls": False, "device": device, "available": available_providers(), "provider": m.provider}
        )
    )


def rate(fn, seconds: float) -> tuple[float, float]:
    """calls/s and median per-call ms over `seconds` (after a short warm)."""
    for _ in range(3):
        fn()
    lat = []
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        s = time.perf_counter()
        fn()
        e = time.perf_counter()
        lat.append(e - s)
        if e >= end:
            break
    return len(lat) / (e - t0), statistics.median(lat) * 1000


def batcher_run(model, seconds: float, threads: int = 64) -> dict:
    from inference.runtime.batcher import DynamicBatcher

    x = np.random.default_rng(7).standard_normal((1, 256)).astype(np.float32)
    b = DynamicBatcher(model, max_batch_size=64, max_queue_delay_ms=2)
    lats: list[list[float]] = [[] for _ in range(threads)]
    start_evt = threading.Event()
    state = {"measure_from": 0.0, "stop": 0.0}
    errors = []

    def caller(i: int) -> None:
        mine = lats[i]
        start_evt.wait()
        try:
            while True:
                s = time.perf_counter()
                if s >= state["stop"]:
                    return
                b.predict({"input": x}, timeout_s=10)
                e = time.perf_counter()
                if s >= state["measure_from"] and e <= state["stop"]:
                    mine.append(e - s)
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    ts = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    now = time.perf_counter()
    state["measure_from"] = now + 0.5
    state["stop"] = now + 0.5 + seconds
    st0 = None
    start_evt.set()
    time.sleep(0.5)
    st0 = b.stats()
    for t in ts:
        t.join()
    st1 = b.stats()
    b.close()
    all_l = sorted(v for thread_lats in lats for v in thread_lats)
    n = len(all_l)
    batches = st1.batches - st0.batches
    return {
        "requests": n,
        "req_per_s": n / seconds,
        "p50_ms": all_l[n // 2] * 1000 if n else None,
        "p99_ms": all_l[min(n - 1, int(n * 0.99))] * 1000 if n else None,
        "mean_batch_rows": (st1.rows - st0.rows) / batches if batches else None,
        "mean_model_ms": (st1.model_ms_total - st0.model_ms_total) / batches if batches else None,
        "errors": errors[:3],
    }


def main(modeldir: str, outjson: str, seconds: float) -> None:
    import onnxruntime as ort

    ort.preload_dlls()
    from inference.runtime.session import LoadedModel, available_providers

    res: dict = {
        "ort_version": ort.__version__,
        "ort_file": ort.__file__,
        "available": available_providers(),
        "device_info": ort.get_device(),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(res), flush=True)
    models = {}
    for name in ("mlp", "tiny"):
        for dev in ("gpu", "cpu"):
            m = LoadedModel.load(os.path.join(modeldir, f"{name}.onnx"), device=dev, name=name)
            m.warm()
            models[(name, dev)] = m
            row = {
                "model": name,
                "device_requested": dev,
                "provider": m.provider,
                "session_providers": m._session.get_providers(),
                "load_ms": round(m.load_ms, 1),
                "warm_ms": round(m.warm_ms, 1),
                "repr": repr(m),
            }
            res.setdefault("loads", []).append(row)
            print(json.dumps(row), flush=True)
    # correctness: GPU vs CPU on the same batch
    x = np.random.default_rng(3).standard_normal((64, 256)).astype(np.float32)
    g = models[("mlp", "gpu")].predict({"input": x})["logits"]
    c = models[("mlp", "cpu")].predict({"input": x})["logits"]
    res["mlp_gpu_vs_cpu_max_abs_diff"] = float(np.max(np.abs(g - c)))
    res["mlp_output_max_abs"] = float(np.max(np.abs(c)))
    print("max |gpu-cpu| =", res["mlp_gpu_vs_cpu_max_abs_diff"], "of max |out|", res["mlp_output_max_abs"], flush=True)

    # predict throughput, interleaved, 3 reps
    plan = [("mlp", b) for b in (1, 8, 64, 256)] + [("tiny", b) for b in (1, 64)]
    inputs = {}
    for name, bsz in plan:
        width = 256 if name == "mlp" else 10
        inputs[(name, bsz)] = np.random.default_rng(bsz).standard_normal((bsz, width)).astype(np.float32)
    pred = []
    for rep in range(3):
        order = ("gpu", "cpu") if rep % 2 == 0 else ("cpu", "gpu")
        for name, bsz in plan:
            for dev in order:
                m = models[(name, dev)]
                feed = {"input": inputs[(name, bsz)]}
                secs = seconds if name == "mlp" else seconds * 0.6
                calls, ms = rate(lambda m=m, feed=feed: m.predict(feed), secs)
                row = {
                    "rep": rep,
                    "model": name,
                    "batch": bsz,
                    "device": dev,
                    "provider": m.provider,
                    "calls_per_s": calls,
                    "rows_per_s": calls * bsz,
                    "median_call_ms": ms,
                }
                pred.append(row)
                print(json.dumps(row), flush=True)
    res["predict"] = pred
    # DynamicBatcher, 64 threads x 1 row, interleaved, 3 reps
    bat = []
    for rep in range(3):
        order = ("gpu", "cpu") if rep % 2 == 0 else ("cpu", "gpu")
        for dev in order:
            r = batcher_run(models[("mlp", dev)], seconds * 2)
            r.update({"rep": rep, "device": dev, "provider": models[("mlp", dev)].provider})
            bat.append(r)
            print(json.dumps(r), flush=True)
    res["batcher"] = bat

    # medians
    summ = {}
    for name, bsz in plan:
        for dev in ("gpu", "cpu"):
            rs = [r for r in pred if r["model"] == name and r["batch"] == bsz and r["device"] == dev]
            summ[f"{name} b{bsz} {dev}"] = {
                "rows_per_s": statistics.median(r["rows_per_s"] for r in rs),
                "median_call_ms": statistics.median(r["median_call_ms"] for r in rs),
                "all_rows_per_s": [round(r["rows_per_s"]) for r in rs],
            }
    for dev in ("gpu", "cpu"):
        rs = [r for r in bat if r["device"] == dev]
        summ[f"batcher mlp 64x1 {dev}"] = {
            k: statistics.median(r[k] for r in rs)
            for k in ("req_per_s", "p50_ms", "p99_ms", "mean_batch_rows", "mean_model_ms")
        }
        summ[f"batcher mlp 64x1 {dev}"]["all_req_per_s"] = [round(r["req_per_s"]) for r in rs]
    res["summary"] = summ
    print(json.dumps(summ, indent=1), flush=True)
    with open(outjson, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    if sys.argv[1] == "probe":
        probe(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 1.5)
