"""CPU one monitoring flush costs a serving process, over a minute of traffic (embedded default).

    .venv/bin/python bench/flush_cost.py [--rps 1800] [--features 256] [--flushes 30]

Records `rps x interval` mlp-shaped predictions (inputs [1, F], outputs [1, 10], drift
sampling at the default 5 %), flushes to a fresh SQLite database, and repeats for a minute
of 2 s flushes, timing each flush's thread CPU time: the time the flusher holds the GIL
away from the event loop. A flush that re-reads what the minute already stored grows
along the minute (docs/monitoring.md, "Cost"); one that only appends stays flat.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rps", type=int, default=1800, help="predictions per second per process")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between flushes")
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--flushes", type=int, default=30)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["MODELHUB_DATA_DIR"] = tempfile.mkdtemp(prefix="modelhub-flush-")
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import numpy as np

    from inference.telemetry.recorder import PredictionRecord, Recorder
    from monitoring.flusher import Flusher

    recorder = Recorder()
    recorder._started = True  # no background flusher: this script flushes by hand
    recorder.default_drift_rate = settings.MONITORING_DEFAULT_DRIFT_SAMPLE_RATE
    flusher = Flusher(recorder, redis_url="", interval_s=0)
    x = np.random.default_rng(0).random((1, args.features), dtype=np.float32)
    y = np.random.default_rng(1).random((1, 10), dtype=np.float32)
    per_flush = int(args.rps * args.interval)
    cpu_ms = []
    for _ in range(args.flushes):
        for _ in range(per_flush):
            recorder.record(
                PredictionRecord("mlp", "mlp:1", "primary", 10.0, True, rows=1, inputs={"input": x}, outputs={"o": y})
            )
        started = time.thread_time()
        flusher.flush()
        cpu_ms.append((time.thread_time() - started) * 1000)
    n = len(cpu_ms)
    rate = recorder.default_drift_rate
    print(f"{n} flushes of {per_flush} predictions ({args.features} features, drift rate {rate})")
    first, middle, last = cpu_ms[0], cpu_ms[n // 2], cpu_ms[-1]
    mean, worst = statistics.fmean(cpu_ms), max(cpu_ms)
    print(f"flush CPU ms: first {first:.1f}, middle {middle:.1f}, last {last:.1f}, mean {mean:.1f}, max {worst:.1f}")


if __name__ == "__main__":
    main()
