"""The benchmark harness's batch-statistics file (bench/harness.py), written by every serving
process: the ASGI front and the inference worker alike, so it lives below both."""

from __future__ import annotations

import os
from typing import Any

import orjson

from config.env import env_str


def write_batch_stats(stats: dict[str, Any]) -> None:
    """For bench/harness.py: $STATS_FILE.pid<PID>.json = {model: {"calls": N, "rows": M}}, if STATS_FILE is set."""
    path = env_str("STATS_FILE")
    if not path:
        return
    data = {model: {"calls": st.batches, "rows": st.rows} for model, st in stats.items()}
    tmp = f"{path}.pid{os.getpid()}.tmp"
    with open(tmp, "wb") as out:
        out.write(orjson.dumps(data))
    os.replace(tmp, f"{path}.pid{os.getpid()}.json")
