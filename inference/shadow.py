"""Shadow traffic: copies of requests run in the background, never slowing the caller.

A few daemon threads take jobs from a bounded queue. `submit` never blocks: when the
queue is full the copy is dropped and counted. A job's failure is counted and logged,
never raised. The comparison of each shadow answer with the answer the caller got is
kept in small counters per (endpoint, primary, shadow) in this process, and handed to
`on_done`: the serving edge records it with the shadow's answer (PredictionRecord.agreed),
so it travels the monitoring pipeline like every request counter (flusher -> Redis minute
hashes or, on the embedded default, the database -> MetricRollup.shadow_compared /
shadow_agreed) and any process reads agreement over a window through
monitoring.selectors (what a rollout's shadow_agreement check decides on).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class ShadowComparison:
    compared: int = 0  # shadow answered and was compared
    agreed: int = 0  # every output close (numbers) or equal (others)
    errors: int = 0  # the shadow failed
    dropped: int = 0  # the queue was full

    def to_dict(self) -> dict[str, int]:
        return {"compared": self.compared, "agreed": self.agreed, "errors": self.errors, "dropped": self.dropped}


def outputs_agree(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    """Same output names and shapes, numbers within a small tolerance, others equal."""
    if a.keys() != b.keys():
        return False
    for name, left in a.items():
        right = b[name]
        if left.shape != right.shape:
            return False
        if left.dtype.kind in "fiub" and right.dtype.kind in "fiub":
            if not np.allclose(left, right, rtol=1e-3, atol=1e-5, equal_nan=True):
                return False
        elif not np.array_equal(left, right):
            return False
    return True


class ShadowPool:
    def __init__(self, *, threads: int = 2, max_queue: int = 256) -> None:
        self._queue: queue.Queue[Callable[[], None]] = queue.Queue(maxsize=max_queue)
        self._threads = threads
        self._started = False
        self._start_lock = threading.Lock()
        self._lock = threading.Lock()
        self.comparisons: dict[tuple[str, str, str], ShadowComparison] = {}

    def _start(self) -> None:
        with self._start_lock:
            if self._started:
                return
            for i in range(self._threads):
                threading.Thread(target=self._loop, name=f"shadow-{i}", daemon=True).start()
            self._started = True

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            try:
                job()
            except Exception:  # noqa: BLE001 - a shadow must never take the thread down
                log.exception("shadow job failed")
            finally:
                self._queue.task_done()

    def submit(self, job: Callable[[], None], *, key: tuple[str, str, str]) -> bool:
        """Queue a shadow call; False (and counted as dropped) when the queue is full."""
        if not self._started:
            self._start()
        try:
            self._queue.put_nowait(job)
            return True
        except queue.Full:
            self.count(key, dropped=1)
            return False

    def count(self, key: tuple[str, str, str], **changes: int) -> None:
        with self._lock:
            stats = self.comparisons.get(key)
            if stats is None:
                stats = self.comparisons[key] = ShadowComparison()
            for name, value in changes.items():
                setattr(stats, name, getattr(stats, name) + value)

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {" -> ".join(key): stats.to_dict() for key, stats in self.comparisons.items()}

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """For tests and shutdown: True once every queued job has finished."""
        done = threading.Event()

        def waiter() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        return done.wait(timeout_s)


shadow_pool = ShadowPool()


def shadow_run(
    *,
    pool: ShadowPool,
    key: tuple[str, str, str],
    call: Callable[[], Mapping[str, np.ndarray]],
    answered: Mapping[str, np.ndarray],
    on_done: Callable[[bool, Any, float, bool | None], None] | None = None,
) -> bool:
    """Run `call` in the background and compare its outputs with `answered`; `on_done`
    gets (ok, outputs or the exception, latency in ms, agreed: None when it failed)."""

    def job() -> None:
        import time

        started = time.perf_counter()
        try:
            outputs = call()
        except Exception as exc:  # noqa: BLE001
            pool.count(key, errors=1)
            if on_done is not None:
                on_done(False, exc, (time.perf_counter() - started) * 1000.0, None)
            return
        agreed = outputs_agree(answered, outputs)
        pool.count(key, compared=1, agreed=int(agreed))
        if on_done is not None:
            on_done(True, outputs, (time.perf_counter() - started) * 1000.0, agreed)

    return pool.submit(job, key=key)
