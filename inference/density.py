"""Density reports: each web process's model-memory budget, use and cold starts, in Redis.

A web process's in-process models live in its ModelRepository (inference/transport.py);
its monitoring flusher calls `publish()` every flush (2 s) so that /metrics, served by
any one process, can show every process. Inference workers put the same report in their
heartbeat (`memory`). Keys: `mh:mem:procs` (sorted set: process -> expiry, epoch s) and
`mh:mem:p:{process}` (JSON, expires with it).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import orjson

PROCS_KEY = "mh:mem:procs"
REPORT_TTL_S = 10


def _report_key(process: str) -> str:
    return f"mh:mem:p:{process}"


def process_name() -> str:
    return f"web:{socket.gethostname()}:{os.getpid()}"


def publish(client: Any) -> None:
    """Write this web process's report (nothing when it holds no in-process model)."""
    # Imported here: the monitoring flusher imports this module, and needs the transport
    # (and ONNX Runtime) only in a process that serves.
    from inference.transport import in_process_transport

    repository = in_process_transport().repository
    if not len(repository) and not repository.stats.loads:
        return
    name = process_name()
    pipe = client.pipeline(transaction=False)
    pipe.set(_report_key(name), orjson.dumps({"process": name, **repository.memory_report()}), ex=REPORT_TTL_S)
    pipe.zadd(PROCS_KEY, {name: time.time() + REPORT_TTL_S})
    pipe.zremrangebyscore(PROCS_KEY, "-inf", time.time() - 60)
    pipe.execute()


def web_reports(client: Any) -> list[dict[str, Any]]:
    """Every live web process's last report."""
    names = [n.decode() for n in client.zrangebyscore(PROCS_KEY, time.time(), "+inf")]
    if not names:
        return []
    return [orjson.loads(raw) for raw in client.mget([_report_key(n) for n in names]) if raw]
