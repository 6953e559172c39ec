#!/usr/bin/env python3
"""What an ONNX Runtime session really costs in resident memory (not a test).

    .venv/bin/python bench/session_memory.py --repeats 3 --out /tmp/session_memory.json

In one fresh process: the resident set size (RSS) before anything is loaded, after the
first session of the process (ONNX Runtime's one-time start-up: its environment, thread
pools, kernel registry), then for each model (tiny, the peers' mlp, a 4x bigger mlp)
`--repeats` loads of distinct copies, each the repository's way (session options as
`inference.runtime.session` sets them, `intra_op_threads=1`, 3 warm-up runs): RSS before
the load, after load + warm-up, and after `malloc_trim`; then the same after unloading.
Prints one JSON line per load and a summary: initializer bytes, file bytes, median delta.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnx  # noqa: E402
from gpu_check import mlp as build_mlp  # noqa: E402

from inference.runtime.repository import release_memory, rss_bytes  # noqa: E402
from inference.runtime.session import LoadedModel  # noqa: E402
from tests import onnx_models  # noqa: E402

MB = 1 << 20


def initializer_bytes(path: str) -> int:
    model = onnx.load(path)
    return sum(len(t.raw_data) or 4 * len(t.float_data) for t in model.graph.initializer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="session-memory-"))
    models = {
        "tiny": [
            onnx_models.write_model(folder, f"tiny{i}.onnx", onnx_models.tiny_classifier()) for i in range(args.repeats)
        ],
        "mlp": [build_mlp(folder / f"mlp{i}.onnx") for i in range(args.repeats)],
        "mlp4x": [build_mlp(folder / f"big{i}.onnx", (512, 4096, 4096, 4096, 10)) for i in range(args.repeats)],
    }
    release_memory()
    rows: list[dict[str, object]] = []
    baseline = rss_bytes()
    first = LoadedModel.load(
        str(onnx_models.write_model(folder, "first.onnx", onnx_models.tiny_classifier())), intra_op_threads=1
    )
    first.warm(3)
    release_memory()
    startup = rss_bytes() - baseline
    kept = []
    for name, paths in models.items():
        for path in paths:
            release_memory()
            before = rss_bytes()
            model = LoadedModel.load(str(path), intra_op_threads=1)
            model.warm(3)
            loaded = rss_bytes() - before
            release_memory()
            trimmed = rss_bytes() - before
            kept.append(model)
            row = {
                "model": name,
                "file_bytes": path.stat().st_size,
                "initializer_bytes": initializer_bytes(str(path)),
                "delta_loaded": loaded,
                "delta_trimmed": trimmed,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    release_memory()
    before = rss_bytes()
    for model in kept:
        model.unload()
    kept.clear()
    release_memory()
    freed = before - rss_bytes()
    summary = {
        "baseline_mb": round(baseline / MB, 1),
        "ort_startup_mb": round(startup / MB, 1),
        "freed_by_unloading_all_mb": round(freed / MB, 1),
        "per_model": {
            name: {
                "file_mb": round(models[name][0].stat().st_size / MB, 2),
                "initializers_mb": round(int(rows_of[0]["initializer_bytes"]) / MB, 2),
                "median_delta_loaded_mb": round(statistics.median(int(r["delta_loaded"]) for r in rows_of) / MB, 2),
                "median_delta_trimmed_mb": round(statistics.median(int(r["delta_trimmed"]) for r in rows_of) / MB, 2),
            }
            for name in models
            for rows_of in [[r for r in rows if r["model"] == name]]
        },
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
