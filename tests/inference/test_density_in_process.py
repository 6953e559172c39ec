"""Density in a web process: the in-process transport serves three endpoints from a budget
for two (real ORT sessions): the least recently used is unloaded, reloaded on its next
request, which waits when the reload fits its deadline and gets 503 + Retry-After when not."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from inference.runtime.errors import ColdStart
from inference.runtime.repository import ModelRepository
from inference.spec import DeploymentSpec
from inference.transport import InProcessTransport
from tests import density

X = {"x": np.ones((1, density.FEATURES), np.float32)}


def _spec(path: str, deployment_id: int, *, pinned: bool = False) -> DeploymentSpec:
    return DeploymentSpec(
        deployment_id=deployment_id,
        endpoint=f"e{deployment_id}",
        model=f"m{deployment_id}",
        version=1,
        role="primary",
        weight=100,
        artifact_sha256=f"{deployment_id:064d}",
        artifact_path=path,
        signature={},
        pinned=pinned,
    )


@pytest.fixture
def three_for_two(tmp_path: Path) -> tuple[InProcessTransport, list[str]]:
    paths = density.model_files(tmp_path, 3)
    return InProcessTransport(ModelRepository(budget_bytes=density.budget_for(2.5, paths[0]))), paths


def test_the_least_recently_used_endpoint_is_unloaded_and_reloaded_by_its_next_request(three_for_two) -> None:
    transport, paths = three_for_two
    a, b, c = (_spec(p, i + 1) for i, p in enumerate(paths))
    for spec in (a, b, c):  # c's load unloads a
        assert transport.infer(spec, X, timeout_s=30).outputs["y"].shape == (1, 8)
    assert not transport.ready(a) and transport.ready(b) and transport.ready(c)

    result = transport.infer(a, X, timeout_s=30)  # a deadline the reload fits: the request waits

    assert result.outputs["y"].shape == (1, 8)
    assert transport.ready(a) and not transport.ready(b)
    assert transport.repository.memory_report()["cold_starts"] == 1


def test_a_reload_longer_than_the_deadline_answers_503_with_retry_after_and_reloads_in_the_background(
    three_for_two,
) -> None:
    transport, paths = three_for_two
    a, b, c = (_spec(p, i + 1) for i, p in enumerate(paths))
    for spec in (a, b, c):
        transport.infer(spec, X, timeout_s=30)

    with pytest.raises(ColdStart) as refused:
        transport.infer(a, X, timeout_s=0.0001)  # no reload fits a 0.1 ms deadline

    assert refused.value.status == 503 and refused.value.retry_after >= 1
    assert transport.repository.stats.cold_refusals == 1
    for _ in range(600):  # the background reload lands (bounded so a bug fails, not hangs)
        if transport.ready(a):
            break
        time.sleep(0.05)
    assert transport.ready(a) and not transport.ready(b)


def test_a_pinned_endpoint_stays_loaded(three_for_two) -> None:
    transport, paths = three_for_two
    a, b, c = _spec(paths[0], 1, pinned=True), _spec(paths[1], 2), _spec(paths[2], 3)
    for spec in (a, b, c):
        transport.infer(spec, X, timeout_s=30)

    assert transport.ready(a) and not transport.ready(b) and transport.ready(c)
