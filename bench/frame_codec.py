"""CPU one worker-pool frame costs to encode and decode (inference/pool_protocol.py), optionally
against another checkout's, interleaved (a framing lever measured on its own).

    .venv/bin/python bench/frame_codec.py [--baseline ../base] [--rounds 7] [--n 20000]

A request frame of one row ([1, 10] and [1, 256] FP32, the bench models' inputs) is encoded
and decoded `n` times per round; rounds alternate between this checkout and the baseline so
that a neighbour's load falls on both alike. Prints the median microseconds per call and the
baseline / this ratio. Every pool request costs one encode and one decode on each side
(request on the web, reply on the worker, and back).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import timeit
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _protocol(root: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, root / "inference" / "pool_protocol.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, help="another checkout (e.g. a worktree of the parent commit)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=20000)
    args = parser.parse_args()
    sides = {"this": _protocol(ROOT, "wire_this")}
    if args.baseline:
        sides["baseline"] = _protocol(args.baseline.resolve(), "wire_baseline")
    header = {"id": "a" * 32, "dl": 1.0, "r": "mh:r:" + "a" * 32}
    times: dict[tuple[str, str, int], list[float]] = {}
    for features in (10, 256):
        tensors = {"input": np.ones((1, features), np.float32)}
        for r in range(args.rounds):
            order = list(sides.items()) if r % 2 == 0 else list(reversed(sides.items()))
            for name, wire in order:
                frame = wire.encode_frame(header, tensors)
                calls: dict[str, Any] = {
                    "encode": lambda w=wire, t=tensors: w.encode_frame(header, t),
                    "decode": lambda w=wire, f=frame: w.decode_frame(f),
                }
                for op, call in calls.items():
                    per_call = timeit.timeit(call, number=args.n) / args.n * 1e6
                    times.setdefault((name, op, features), []).append(per_call)
    for features in (10, 256):
        for op in ("encode", "decode"):
            this = statistics.median(times[("this", op, features)])
            line = f"[1,{features}] FP32 {op}: {this:.1f} us"
            if "baseline" in sides:
                base = statistics.median(times[("baseline", op, features)])
                line += f"; baseline {base:.1f} us; baseline / this {base / this:.2f}"
            print(line)


if __name__ == "__main__":
    main()
