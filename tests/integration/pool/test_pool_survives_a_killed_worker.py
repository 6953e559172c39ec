"""Two inference workers, one killed with SIGKILL while requests flow: nothing hangs, the other serves."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from config.errors import ServiceUnavailable
from inference.runtime.errors import DeadlineExceeded
from tests.integration.pool.conftest import (
    mlp_model,
    pool_spec,
    wait_until,
)

pytestmark = [pytest.mark.integration]

DEADLINE_S = 2.0


def test_killing_one_of_two_workers_fails_only_in_flight_requests_and_the_other_keeps_serving(
    transport, inference_workers, tmp_path
):
    spec = pool_spec(mlp_model(tmp_path / "mlp.onnx"), max_queue_delay_ms=1)
    transport.ensure_loaded(spec)
    first, second = inference_workers(), inference_workers()
    wait_until(lambda: transport.warm_workers(spec) == 2, timeout=60, what="both workers to warm the model")

    outcomes: list[tuple[float, float, str]] = []  # (started, seconds, outcome)
    lock = threading.Lock()
    stop = threading.Event()
    x = np.ones((1, 16), np.float32)

    def caller() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                transport.infer(spec, {"input": x}, timeout_s=DEADLINE_S)
                outcome = "ok"
            except ServiceUnavailable:
                outcome = "503"
            except DeadlineExceeded:
                outcome = "504"
            except BaseException as exc:  # noqa: BLE001 - anything else is a failure of the test
                outcome = f"unexpected {type(exc).__name__}: {exc}"
            with lock:
                outcomes.append((started, time.monotonic() - started, outcome))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: len(outcomes) > 100, timeout=30, what="requests to flow")
    first.kill()
    killed_at = time.monotonic()
    time.sleep(DEADLINE_S + 2)
    stop.set()
    for t in threads:
        t.join(DEADLINE_S + 10)
    assert not any(t.is_alive() for t in threads), "a request hung"

    kinds = {o for _, _, o in outcomes}
    assert kinds <= {"ok", "503", "504"}, kinds
    # Every request ended by its deadline (plus scheduling slack on a busy machine), none hung.
    assert max(seconds for _, seconds, _ in outcomes) < DEADLINE_S + 3
    # Requests started well after the kill are all served by the survivor.
    later = [o for started, _, o in outcomes if started > killed_at + DEADLINE_S + 0.5]
    assert later and set(later) == {"ok"}, later[-20:]
    assert second.proc.poll() is None
    wait_until(lambda: transport.warm_workers(spec) == 1, timeout=15, what="the dead worker's heartbeat to expire")
