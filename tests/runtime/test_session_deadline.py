"""A deadline stops a long inference through RunOptions.terminate; the session keeps working."""

from __future__ import annotations

import time

import numpy as np
import pytest

from inference.runtime.errors import DeadlineExceeded
from inference.runtime.session import LoadedModel


def test_a_run_past_its_deadline_is_stopped_and_the_session_still_works(slow_model: LoadedModel) -> None:
    big = np.ones((4096, 1024), np.float32)  # several seconds of MatMuls on one thread
    started = time.monotonic()

    with pytest.raises(DeadlineExceeded, match="ran past its deadline of 100 ms and was stopped") as excinfo:
        slow_model.predict({"x": big}, timeout_s=0.1)

    assert time.monotonic() - started < 3  # generous: stopped well before the run would end
    assert excinfo.value.status == 504
    out = slow_model.predict({"x": np.ones((2, 1024), np.float32)}, timeout_s=30)
    np.testing.assert_allclose(out["y"], 1.0, rtol=1e-4)


def test_a_run_within_its_deadline_is_not_disturbed(tiny_model: LoadedModel) -> None:
    for _ in range(50):
        out = tiny_model.predict({"x": np.zeros((1, 10), np.float32)}, timeout_s=30)
        assert out["probabilities"].shape == (1, 2)


def test_a_deadline_already_passed_fails_without_running(tiny_model: LoadedModel) -> None:
    with pytest.raises(DeadlineExceeded, match="deadline passed before the run started"):
        tiny_model.predict({"x": np.zeros((1, 10), np.float32)}, timeout_s=0)
