"""Density on an inference worker (a real process): with a budget for two models and three
deployments assigned, the third is held cold and loaded by its first request, which unloads
the least recently used unpinned deployment; a pinned one is never unloaded."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from inference.pool import worker_status
from tests import density
from tests.integration.pool.conftest import deployment_report, pool_spec, wait_until

pytestmark = [pytest.mark.integration]

X = {"x": np.ones((1, density.FEATURES), np.float32)}


def _state(spec: Any) -> str:
    reports = deployment_report(spec)
    return reports[0]["state"] if reports else ""


def _memory() -> dict[str, Any]:
    [beat] = worker_status()
    return beat["memory"]


def _three(tmp_path, *, pin_first: bool = False) -> list[Any]:
    paths = density.model_files(tmp_path, 3)
    base = random.randint(10_000_000, 90_000_000)
    return [
        pool_spec(path, deployment_id=base + i, endpoint=f"e{i}", pinned=pin_first and i == 0)
        for i, path in enumerate(paths)
    ]


def _start(transport, inference_workers, specs, tmp_path) -> Any:
    """A worker whose budget holds two of the three: what one model costs is measured by a
    first worker, then a second worker gets 2.5 times that."""
    transport.ensure_loaded(specs[0])
    probe = inference_workers(args=["--memory-budget", str(1 << 50)])
    wait_until(lambda: _state(specs[0]) == "ready", timeout=60, what=f"the probe warm:\n{probe.output()}")
    charge = _memory()["used_bytes"]
    probe.stop()
    worker = inference_workers(args=["--memory-budget", str(int(charge * 2.5))])
    for spec in specs[:2]:
        transport.ensure_loaded(spec)
        if not wait_until(lambda spec=spec: _state(spec) == "ready", timeout=60, what=spec.key, fail=False):
            raise AssertionError(f"{spec.key} not warm (charge {charge}, {worker_status()}):\n{worker.output()}")
    return worker


def test_the_third_deployment_is_loaded_by_its_request_and_the_least_recently_used_unloaded(
    transport, inference_workers, tmp_path
):
    a, b, c = _three(tmp_path)
    worker = _start(transport, inference_workers, [a, b, c], tmp_path)
    transport.infer(a, X, timeout_s=30)  # a is now more recently used than b
    transport.ensure_loaded(c)
    wait_until(lambda: _state(c) == "cold", timeout=30, what=f"c held cold (no room):\n{worker.output()}")
    assert transport.ready(c)  # held cold counts as served: requests wait for the load

    assert transport.infer(c, X, timeout_s=30).outputs["y"].shape == (1, 8)

    wait_until(lambda: _state(b) == "cold" and _state(c) == "ready", timeout=30, what="b unloaded, c warm")
    assert _state(a) == "ready"
    assert transport.infer(b, X, timeout_s=30).outputs["y"].shape == (1, 8)  # b back, on demand
    wait_until(lambda: _memory()["cold_starts"] >= 1, timeout=30, what="the cold start in the heartbeat")
    memory = _memory()
    assert memory["evictions"] >= 2 and memory["used_bytes"] <= memory["budget_bytes"]


def test_a_pinned_deployment_is_never_unloaded_for_another(transport, inference_workers, tmp_path):
    a, b, c = _three(tmp_path, pin_first=True)  # a: pinned, and the least recently used
    _start(transport, inference_workers, [a, b, c], tmp_path)
    transport.infer(b, X, timeout_s=30)
    transport.ensure_loaded(c)
    wait_until(lambda: _state(c) == "cold", timeout=30, what="c held cold")

    transport.infer(c, X, timeout_s=30)

    wait_until(lambda: _state(b) == "cold" and _state(c) == "ready", timeout=30, what="b unloaded, c warm")
    assert _state(a) == "ready"
