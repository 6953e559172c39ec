"""MODELHUB_LOG_LEVEL is read by one reader (config.env.log_level) in every process."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import log_level
from workers import inference_worker


def test_the_level_is_read_in_any_case_and_defaults_to_info(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELHUB_LOG_LEVEL", raising=False)
    assert log_level() == "INFO"
    monkeypatch.setenv("MODELHUB_LOG_LEVEL", " warning ")
    assert log_level() == "WARNING"


def test_an_unknown_level_stops_start_up_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELHUB_LOG_LEVEL", "loud")
    with pytest.raises(ImproperlyConfigured, match="MODELHUB_LOG_LEVEL"):
        log_level()


def test_the_inference_worker_takes_its_defaults_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    class Stop(Exception):
        pass

    def fake_worker(**kwargs: object) -> None:
        seen.update(kwargs)
        raise Stop

    monkeypatch.delenv("MODELHUB_WORKER_DEVICE", raising=False)
    monkeypatch.setenv("MODELHUB_LOG_LEVEL", "error")
    monkeypatch.setenv("MODELHUB_WORKER_PULLERS", "3")
    monkeypatch.setenv("MODELHUB_WORKER_INTRA_OP", "")
    monkeypatch.setenv("MODELHUB_WORKER_ID", "w-7")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/9")
    monkeypatch.setattr(inference_worker, "InferenceWorker", fake_worker)
    levels: list[object] = []
    monkeypatch.setattr(inference_worker.logging, "basicConfig", lambda **kw: levels.append(kw["level"]))
    with pytest.raises(Stop):
        inference_worker.main([])
    assert levels == ["ERROR"]
    settings_read = {name: seen[name] for name in ("device", "redis_url", "pullers", "intra_op_threads", "worker_id")}
    assert settings_read == {
        "device": "cpu",
        "redis_url": "redis://127.0.0.1:1/9",
        "pullers": 3,
        "intra_op_threads": None,
        "worker_id": "w-7",
    }
