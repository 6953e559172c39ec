"""Two inference workers, one killed with SIGKILL while requests flow: nothing hangs, the other serves."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.integration.pool.conftest import (
    assert_survived_the_kill,
    outcome,
    two_workers_warm,
    wait_until,
)

pytestmark = [pytest.mark.integration]

DEADLINE_S = 2.0


def test_killing_one_of_two_workers_fails_only_in_flight_requests_and_the_other_keeps_serving(
    transport, inference_workers, tmp_path
):
    spec, first, second = two_workers_warm(transport, inference_workers, tmp_path)

    outcomes: list[tuple[float, float, str]] = []  # (started, seconds, outcome)
    lock = threading.Lock()
    stop = threading.Event()
    x = np.ones((1, 16), np.float32)

    def caller() -> None:
        while not stop.is_set():
            started = time.monotonic()
            error: BaseException | None = None
            try:
                transport.infer(spec, {"input": x}, timeout_s=DEADLINE_S)
            except BaseException as exc:  # noqa: BLE001 - classified by outcome()
                error = exc
            with lock:
                outcomes.append((started, time.monotonic() - started, outcome(error)))

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

    assert_survived_the_kill(outcomes, killed_at, DEADLINE_S)
    assert second.proc.poll() is None
    wait_until(lambda: transport.warm_workers(spec) == 1, timeout=15, what="the dead worker's heartbeat to expire")
