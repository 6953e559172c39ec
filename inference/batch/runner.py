"""The embedded default's batch runner: one background thread of the web process.

With Celery eager (no Redis), jobs are not run inside the request that starts them:
they are queued here and driven one at a time, chunk after chunk, by the same services
the Celery tasks call. A web process that dies leaves leases that expire; the periodic
sweep (the embedded scheduler runs the beat schedule) submits the job again.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from django.db import close_old_connections, connection

log = logging.getLogger(__name__)


class LocalRunner:
    def __init__(self, drive: Callable[[int], None]) -> None:
        self._drive = drive
        self._queue: queue.Queue[int] = queue.Queue()
        self._queued: set[int] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._busy = 0

    def submit(self, job_id: int) -> None:
        """Drive `job_id` soon; a job already waiting is not queued twice."""
        with self._lock:
            if job_id in self._queued:
                return
            self._queued.add(job_id)
            self._busy += 1
            self._queue.put(job_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="batch-runner", daemon=True)
                self._thread.start()

    def idle(self) -> bool:
        with self._lock:
            return self._busy == 0

    def _run(self) -> None:
        while True:
            job_id = self._queue.get()
            with self._lock:
                # Taken off before driving: a submit while it runs queues one more pass.
                self._queued.discard(job_id)
            try:
                close_old_connections()
                self._drive(job_id)
            except Exception:
                log.exception("batch job %s: the embedded runner failed", job_id)
            finally:
                connection.close()
                with self._lock:
                    self._busy -= 1
