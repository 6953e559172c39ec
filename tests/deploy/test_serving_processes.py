"""Web processes and ONNX Runtime threads are derived once (config/serving.py), for every server."""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config import serving

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODELHUB_WEB_WORKERS", "MODELHUB_INTRA_OP_THREADS", "MODELHUB_BIND"):
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


def test_the_in_process_transport_uses_the_derivation(monkeypatch: pytest.MonkeyPatch) -> None:
    from inference import transport

    monkeypatch.setenv("MODELHUB_WEB_WORKERS", "1")
    assert transport._intra_op_threads() == serving.available_cores()
    monkeypatch.setenv("MODELHUB_INTRA_OP_THREADS", "7")
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
