"""Density: under a memory budget the repository unloads the least recently used unpinned
model to make room, reloads on demand, and never unloads a pinned one (real ORT sessions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.runtime.errors import MemoryBudgetExceeded
from inference.runtime.repository import ModelRepository
from tests import density

X = {"x": np.ones((1, density.FEATURES), np.float32)}


@pytest.fixture
def room_for_two(tmp_path: Path) -> tuple[ModelRepository, list[str]]:
    """A repository whose budget holds two of three same-size models (about 8 MiB files)."""
    paths = density.model_files(tmp_path, 3)
    return ModelRepository(budget_bytes=density.budget_for(2.5, paths[0])), paths


def test_a_third_model_unloads_the_least_recently_used_one(room_for_two) -> None:
    repository, (a, b, c) = room_for_two
    repository.load("a", a, intra_op_threads=1)
    repository.load("b", b, intra_op_threads=1)
    repository.get("a").predict(X)  # a is now more recently used than b

    repository.load("c", c, intra_op_threads=1)

    assert sorted(repository.keys()) == ["a", "c"]
    assert repository.was_evicted("b") and repository.stats.evictions == 1
    assert repository.used_bytes() <= repository.budget_bytes


def test_an_unloaded_model_is_loaded_again_and_counted_as_a_cold_start(room_for_two) -> None:
    repository, (a, b, c) = room_for_two
    for key, path in (("a", a), ("b", b), ("c", c)):  # c unloads a
        repository.load(key, path, intra_op_threads=1)
    assert "a" not in repository

    served = repository.load("a", a, intra_op_threads=1)  # unloads b, the least recently used now

    assert served.predict(X)["y"].shape == (1, 8)
    assert sorted(repository.keys()) == ["a", "c"]
    report = repository.memory_report()
    assert report["cold_starts"] == 1 and sum(report["cold_start_buckets"]) == 1
    assert report["cold_start_ms_total"] > 0 and repository.expected_load_ms("a") is not None


def test_a_pinned_model_is_never_unloaded_to_make_room(room_for_two) -> None:
    repository, (a, b, c) = room_for_two
    repository.load("a", a, intra_op_threads=1, pinned=True)  # the least recently used, but pinned
    repository.load("b", b, intra_op_threads=1)

    repository.load("c", c, intra_op_threads=1)

    assert sorted(repository.keys()) == ["a", "c"]


def test_a_load_that_cannot_fit_beside_pinned_models_is_refused_with_a_503(room_for_two) -> None:
    repository, (a, b, c) = room_for_two
    repository.load("a", a, intra_op_threads=1, pinned=True)
    repository.load("b", b, intra_op_threads=1, pinned=True)

    with pytest.raises(MemoryBudgetExceeded) as refused:
        repository.load("c", c, intra_op_threads=1)

    assert refused.value.status == 503 and refused.value.retry_after
    assert sorted(repository.keys()) == ["a", "b"]
