#!/usr/bin/env python3
"""Density benchmark (not a test): many endpoints, few fit, a Zipf-like request mix.

    python3 bench/density.py --endpoints 200 --processes 2 --budget-mb 1024 --seconds 60 --out /tmp/density.json

Builds `--endpoints` distinct versions of one mlp shape (`--dims`, default the peers' mlp:
256 -> 2048 -> 2048 -> 2048 -> 10, about 36 MB each; distinct bytes, cached in `--models`),
then starts `--processes` serving processes. Each is a web process's serving
core as shipped: Django settings, the process's one InProcessTransport and its
ModelRepository with the budget from MODELHUB_MODEL_MEMORY_BUDGET_BYTES (`--budget-mb`),
MODELHUB_INTRA_OP_THREADS=1. In each process `--threads` client threads send 1-row
requests for `--warmup-s` (not counted) then `--seconds`, choosing endpoint k (k = 1..N)
with probability proportional to 1 / k^s (`--zipf`, default 1.1; every process sees the
same popularity ranking, as behind a load balancer), deadline `--timeout-ms`. A request
is "hot" when its deployment was loaded when it started, "cold" when it had to be
(re)loaded. Reported per process: requests/s, p50/p99 of hot and cold requests,
refusals by code, loads, evictions, cold starts and their mean load time, the resident
set size (baseline before any model, peak while serving) against the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

# The one mlp builder of the benchmarks (this folder is on sys.path when run as a script).
from gpu_check import MLP_DIMS  # noqa: E402
from gpu_check import mlp as build_mlp  # noqa: E402


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def build_models(folder: Path, count: int, dims: tuple[int, ...]) -> list[str]:
    """`count` distinct files of one mlp: the weights are drawn once, each version differs in
    its doc string (so in its bytes and digest); a session's memory does not depend on the
    weights' values, and drawing 200 x 9 M normals took minutes on a loaded 2-core machine."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    tag = "x".join(map(str, dims))
    base = folder / f"mlp-{tag}-base.onnx"
    if not base.exists():
        build_mlp(base, dims)
    model = None
    paths = []
    for i in range(count):
        path = folder / f"mlp-{tag}-v{i}.onnx"
        if not path.exists():
            model = model or onnx.load(str(base))
            model.doc_string = f"density benchmark version {i}"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(model.SerializeToString())
            tmp.rename(path)
        paths.append(str(path))
    return paths


def child(args: argparse.Namespace) -> None:
    """One serving process: its transport, client threads, one JSON line on stdout."""
    import django

    django.setup()
    from inference.runtime.errors import RuntimeErrorBase
    from inference.runtime.repository import rss_bytes
    from inference.spec import DeploymentSpec
    from inference.transport import in_process_transport

    paths = json.loads(Path(args.paths_file).read_text())
    specs = [
        DeploymentSpec(
            deployment_id=i + 1,
            endpoint=f"e{i + 1}",
            model=f"mlp{i + 1}",
            version=1,
            role="primary",
            weight=100,
            artifact_sha256=f"{i + 1:064d}",
            artifact_path=path,
            signature={},
            max_batch_size=32,
        )
        for i, path in enumerate(paths)
    ]
    weights = [1.0 / (k**args.zipf) for k in range(1, len(specs) + 1)]
    transport = in_process_transport()
    baseline = rss_bytes()
    x = {"input": np.random.default_rng(0).standard_normal((1, args.dims[0])).astype(np.float32)}
    lock = threading.Lock()
    hot: list[float] = []
    cold: list[float] = []
    refused: dict[str, int] = {}
    peak = [baseline]
    measure_from = time.monotonic() + args.warmup_s
    stop = measure_from + args.seconds
    timeout_s = args.timeout_ms / 1000.0
    measure_perf = time.perf_counter() + args.warmup_s

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            spec = rng.choices(specs, weights)[0]
            was_hot = transport.ready(spec)
            started = time.perf_counter()
            try:
                transport.infer(spec, x, timeout_s=timeout_s)
            except RuntimeErrorBase as exc:
                if started >= measure_perf:
                    with lock:
                        refused[exc.code] = refused.get(exc.code, 0) + 1
                continue
            ms = (time.perf_counter() - started) * 1000.0
            if started < measure_perf:
                continue
            with lock:
                (hot if was_hot else cold).append(ms)

    def sample_rss() -> None:
        while time.monotonic() < stop:
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(os.getpid() * 100 + i,)) for i in range(args.threads)]
    threads.append(threading.Thread(target=sample_rss))
    for t in threads:
        t.start()
    time.sleep(args.warmup_s)
    counters_at = transport.repository.memory_report()  # counters at the end of the warm-up
    began = time.monotonic()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    memory = transport.repository.memory_report()
    for name in ("loads", "evictions", "cold_starts", "cold_start_ms_total"):
        memory[name] -= counters_at[name]
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "seconds": round(elapsed, 1),
                "requests": len(hot) + len(cold),
                "req_per_s": round((len(hot) + len(cold)) / elapsed, 1),
                "hot": {"n": len(hot), "p50_ms": _pct(hot, 0.5), "p99_ms": _pct(hot, 0.99)},
                "cold": {"n": len(cold), "p50_ms": _pct(cold, 0.5), "p99_ms": _pct(cold, 0.99)},
                "refused": refused,
                "loads": memory["loads"],
                "evictions": memory["evictions"],
                "cold_starts": memory["cold_starts"],
                "cold_load_ms_mean": round(memory["cold_start_ms_total"] / memory["cold_starts"], 1)
                if memory["cold_starts"]
                else None,
                "models_loaded_at_end": memory["models"],
                "budget_mb": memory["budget_bytes"] >> 20,
                "model_memory_used_mb": memory["used_bytes"] >> 20,
                "rss_baseline_mb": baseline >> 20,
                "rss_peak_mb": peak[0] >> 20,
                "rss_end_mb": rss_bytes() >> 20,
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="client threads per process")
    parser.add_argument("--budget-mb", type=int, default=1024, help="model-memory budget per process")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured, after the warm-up")
    parser.add_argument("--warmup-s", type=float, default=30.0, help="requests sent but not counted")
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--timeout-ms", type=float, default=5000.0)
    parser.add_argument("--dims", type=lambda s: tuple(int(d) for d in s.split(",")), default=MLP_DIMS)
    parser.add_argument("--models", default="/tmp/modelhub-density-models")
    parser.add_argument("--out", default="")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--paths-file", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    started = time.monotonic()
    paths = build_models(Path(args.models), args.endpoints, args.dims)
    print(f"{len(paths)} models in {args.models} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    paths_file = Path(args.models) / f"paths-{os.getpid()}.json"
    paths_file.write_text(json.dumps(paths))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "MODELHUB_DATA_DIR": os.environ.get("MODELHUB_DATA_DIR", "/tmp/modelhub-density-data"),
        "MODELHUB_MODEL_MEMORY_BUDGET_BYTES": str(args.budget_mb << 20),
        "MODELHUB_INTRA_OP_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    forwarded = [
        *("--threads", str(args.threads), "--seconds", str(args.seconds), "--zipf", str(args.zipf)),
        *("--warmup-s", str(args.warmup_s)),
        *("--timeout-ms", str(args.timeout_ms), "--dims", ",".join(map(str, args.dims))),
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", "--paths-file", str(paths_file), *forwarded],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(args.processes)
    ]
    results: list[dict[str, Any]] = []
    for proc in procs:
        out, _ = proc.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"a serving process failed (exit {proc.returncode})")
        results.append(json.loads(lines[-1]))
    paths_file.unlink()
    report = {
        "config": {k: v for k, v in vars(args).items() if k not in ("child", "paths_file")},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "model_mb": round(os.path.getsize(paths[0]) / 2**20, 1),
        "processes": results,
        "total_req_per_s": round(sum(r["req_per_s"] for r in results), 1),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
