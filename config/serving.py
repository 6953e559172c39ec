"""How many web processes serve, on which address, and how many ONNX Runtime threads each.

Derived here and nowhere else. `python -m config.serve` (the default server: `make run`,
docker-compose, the Kubernetes web Deployment), `platform/gunicorn.conf.py` and the
in-process transport (inference/transport.py) all call these functions, so the server
that starts the processes and the sessions inside them agree on one split of the cores.

Why it matters: an ONNX Runtime session takes every core by default. Two web processes
each running all-core sessions fight over the cores; on the 2-core reference machine that
halved the mlp model's requests/s and tripled its p99 (docs/benchmarks.md). So each
process gets `max(1, cores // processes)` intra-op threads unless told otherwise.

Settings (.env.example): MODELHUB_BIND (host:port), MODELHUB_WEB_WORKERS (processes;
unset = min(4, cores)), MODELHUB_INTRA_OP_THREADS (per session; unset = derived),
MODELHUB_MODEL_MEMORY_BUDGET_BYTES (models per web process; unset = derived, 0 = none).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from config.env import env_int, env_str

DEFAULT_BIND = "127.0.0.1:8000"
MAX_DEFAULT_PROCESSES = 4
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")
MEMINFO = Path("/proc/meminfo")
# Share of the machine's (or container's) memory that loaded models may take, all
# serving processes together; the rest is for the processes themselves, the page cache
# and the other services on the host.
MODEL_MEMORY_SHARE = 0.5


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota.

    The quota is how a container's `--cpus` or a Kubernetes pod's CPU limit shows up;
    os.cpu_count() would report the host's cores instead.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def web_processes(cores: int | None = None) -> int:
    """MODELHUB_WEB_WORKERS, else one per core up to MAX_DEFAULT_PROCESSES (each process
    holds the models it serves, up to its memory budget, so more processes cost memory, not only cores)."""
    configured = env_int("MODELHUB_WEB_WORKERS", 0)
    if configured > 0:
        return configured
    return max(1, min(MAX_DEFAULT_PROCESSES, cores or available_cores()))


def intra_op_threads(processes: int | None = None, cores: int | None = None) -> int:
    """ONNX Runtime intra-op threads per in-process session: MODELHUB_INTRA_OP_THREADS,
    else the cores shared out between the web processes, at least one each."""
    configured = env_int("MODELHUB_INTRA_OP_THREADS", 0)
    if configured > 0:
        return configured
    cores = cores or available_cores()
    return max(1, cores // (processes or web_processes(cores)))


def available_memory(memory_max: Path = CGROUP_MEMORY_MAX, meminfo: Path = MEMINFO) -> int:
    """Bytes of memory this process's machine or container has: MemTotal, capped by a
    cgroup v2 memory limit (a container's `--memory`, a pod's memory limit); 0 if unknown."""
    total = 0
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = memory_max.read_text().strip()
        if limit != "max":
            total = min(total, int(limit)) if total else int(limit)
    except (OSError, ValueError):
        pass
    return total


def model_memory_budget(processes: int | None = None) -> int:
    """Bytes of loaded models one web process may hold: MODELHUB_MODEL_MEMORY_BUDGET_BYTES,
    else half the machine's memory shared out between the web processes. 0 = no budget
    (models stay loaded until their deployment leaves)."""
    configured = env_int("MODELHUB_MODEL_MEMORY_BUDGET_BYTES", -1)
    if configured >= 0:
        return configured
    return int(available_memory() * MODEL_MEMORY_SHARE) // max(1, processes or web_processes())


def worker_memory_budget() -> int:
    """Bytes of loaded models one inference worker may hold: MODELHUB_WORKER_MEMORY_BUDGET_BYTES,
    else half the machine's memory (one worker per host; with N, set it to a share each)."""
    configured = env_int("MODELHUB_WORKER_MEMORY_BUDGET_BYTES", -1)
    if configured >= 0:
        return configured
    return int(available_memory() * MODEL_MEMORY_SHARE)


def bind_address() -> tuple[str, int]:
    """MODELHUB_BIND as (host, port); "[::]:8000" for IPv6."""
    raw = env_str("MODELHUB_BIND", DEFAULT_BIND) or DEFAULT_BIND
    host, _, port = raw.rpartition(":")
    if not host or not port.isdigit():
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"MODELHUB_BIND: expected host:port, got {raw!r}")
    return host.strip("[]"), int(port)


def grpc_port() -> int:
    """MODELHUB_GRPC_PORT: the port of the Open Inference Protocol's gRPC service
    (inference/grpc_server.py), which `python -m config.serve` starts beside the web
    processes when set; 0 or unset: no gRPC service."""
    port = env_int("MODELHUB_GRPC_PORT", 0)
    if not 0 <= port <= 65535:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"MODELHUB_GRPC_PORT: expected a port number, got {port}")
    return port


def describe(processes: int) -> str:
    """One log line for the start-up banner."""
    cores = available_cores()
    return (
        f"{processes} web process(es) x {intra_op_threads(processes, cores)} ONNX Runtime intra-op thread(s) "
        f"on {cores} core(s)"
    )
