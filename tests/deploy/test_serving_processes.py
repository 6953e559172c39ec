"""Web processes and ONNX Runtime threads are derived once (config/serving.py), for every server."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from config import serving

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "MODELHUB_WEB_WORKERS",
        "MODELHUB_INTRA_OP_THREADS",
        "MODELHUB_BIND",
        "MODELHUB_MODEL_MEMORY_BUDGET_BYTES",
        "MODELHUB_WORKER_MEMORY_BUDGET_BYTES",
    ):
        monkeypatch.setenv(name, "")  # restored after the test, even when gunicorn.conf.py sets it


def test_the_cores_are_shared_out_between_the_processes() -> None:
    assert serving.intra_op_threads(processes=2, cores=8) == 4
    assert serving.intra_op_threads(processes=2, cores=2) == 1
    assert serving.intra_op_threads(processes=3, cores=8) == 2


def test_every_process_gets_at_least_one_thread() -> None:
    assert serving.intra_op_threads(processes=4, cores=2) == 1


def test_processes_default_to_one_per_core_up_to_four() -> None:
    assert serving.web_processes(cores=2) == 2
    assert serving.web_processes(cores=1) == 1
    assert serving.web_processes(cores=16) == 4
    assert serving.intra_op_threads(cores=16) == 4


def test_the_settings_override_the_derivation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELHUB_WEB_WORKERS", "3")
    monkeypatch.setenv("MODELHUB_INTRA_OP_THREADS", "5")
    assert serving.web_processes(cores=16) == 3
    assert serving.intra_op_threads(cores=16) == 5


def test_the_process_count_setting_changes_the_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELHUB_WEB_WORKERS", "8")
    assert serving.intra_op_threads(cores=16) == 2


def test_a_cgroup_cpu_quota_caps_the_cores(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("100000 100000\n")  # a container limited to one CPU
    assert serving.available_cores(cpu_max) == 1
    cpu_max.write_text("max 100000\n")
    assert serving.available_cores(cpu_max) == len(os.sched_getaffinity(0))


def test_the_model_memory_budget_is_half_the_memory_shared_out_and_a_cgroup_limit_caps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meminfo, memory_max = tmp_path / "meminfo", tmp_path / "memory.max"
    meminfo.write_text("MemTotal:       16777216 kB\nMemFree:         1000 kB\n")  # 16 GiB
    memory_max.write_text("max\n")
    assert serving.available_memory(memory_max, meminfo) == 16 << 30
    memory_max.write_text(str(4 << 30))  # a container limited to 4 GiB
    assert serving.available_memory(memory_max, meminfo) == 4 << 30

    monkeypatch.setattr(serving, "available_memory", lambda: 16 << 30)
    monkeypatch.setenv("MODELHUB_WEB_WORKERS", "4")
    assert serving.model_memory_budget() == 2 << 30  # half of 16 GiB over 4 processes
    assert serving.worker_memory_budget() == 8 << 30
    monkeypatch.setenv("MODELHUB_MODEL_MEMORY_BUDGET_BYTES", "0")  # off
    monkeypatch.setenv("MODELHUB_WORKER_MEMORY_BUDGET_BYTES", "123")
    assert (serving.model_memory_budget(), serving.worker_memory_budget()) == (0, 123)


def test_settings_take_the_derivation(monkeypatch: pytest.MonkeyPatch) -> None:
    """settings.INTRA_OP_THREADS, computed when a process imports its settings, is the derivation."""
    env = {
        **os.environ,
        "MODELHUB_WEB_WORKERS": "1",
        "MODELHUB_INTRA_OP_THREADS": "",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    read = "from django.conf import settings; print(settings.INTRA_OP_THREADS)"
    out = subprocess.run([sys.executable, "-c", read], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == serving.available_cores()  # one process: every core


def test_the_in_process_transport_uses_the_setting(settings: Any) -> None:
    from inference import transport

    settings.INTRA_OP_THREADS = 7
    assert transport._intra_op_threads() == 7


def test_gunicorn_reads_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELHUB_BIND", "0.0.0.0:8123")
    monkeypatch.setenv("MODELHUB_WEB_WORKERS", "3")
    conf = runpy.run_path(str(ROOT / "platform" / "gunicorn.conf.py"))
    assert conf["bind"] == "0.0.0.0:8123"
    assert conf["workers"] == 3


def test_gunicorn_exports_its_default_process_count_to_its_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = runpy.run_path(str(ROOT / "platform" / "gunicorn.conf.py"))
    assert conf["workers"] == serving.web_processes()
    assert os.environ["MODELHUB_WEB_WORKERS"] == str(conf["workers"])


def test_the_bind_address_is_parsed_or_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert serving.bind_address() == ("127.0.0.1", 8000)
    monkeypatch.setenv("MODELHUB_BIND", "[::]:9000")
    assert serving.bind_address() == ("::", 9000)
    monkeypatch.setenv("MODELHUB_BIND", "8000")
    with pytest.raises(ImproperlyConfigured, match="MODELHUB_BIND"):
        serving.bind_address()
