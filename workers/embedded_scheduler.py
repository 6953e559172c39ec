"""The embedded scheduler: Celery beat's schedule, run inside the web server when there is
no Redis (the embedded default, `make run`).

`workers/celery.py`'s `app.conf.beat_schedule` is the one list of periodic jobs. With a
broker, `celery beat` runs it; without one, every serving process calls `start_embedded()`
at start-up and exactly one of them runs it: the one holding an exclusive `fcntl.flock`
on `DATA_DIR/embedded-scheduler.lock`. The others retry the lock every few seconds, so
when the holder dies (the OS drops its lock) another process takes over. One thread per
process; jobs run in it one after another, through the task's own code (`Task.apply`),
so they must be short and idempotent, as beat's are.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCK_NAME = "embedded-scheduler.lock"


@dataclass(frozen=True)
class Job:
    """One entry of the beat schedule: its name, the task it runs and when."""

    name: str
    task: str
    schedule: Any  # a celery.schedules.schedule (numbers and timedeltas are wrapped)
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] | None = None


def jobs_from_beat(beat_schedule: Mapping[str, Mapping[str, Any]]) -> list[Job]:
    """The jobs of a Celery beat schedule, in its order: the same list beat runs."""
    from celery.schedules import schedule as every

    jobs = []
    for name, entry in beat_schedule.items():
        when = entry["schedule"]
        if isinstance(when, int | float):
            when = every(timedelta(seconds=when))
        elif isinstance(when, timedelta):
            when = every(when)
        jobs.append(Job(name, entry["task"], when, tuple(entry.get("args", ())), entry.get("kwargs")))
    return jobs


def embedded_jobs() -> list[Job]:
    """What the embedded scheduler runs: exactly beat's schedule (workers/celery.py)."""
    from workers.celery import app  # reads Django's settings: on use, not at this module's import

    app.loader.import_default_modules()  # every app's tasks.py, as a worker would (autodiscovery)
    return jobs_from_beat(app.conf.beat_schedule)


def _now() -> datetime:
    return datetime.now(UTC)


class EmbeddedScheduler:
    """Runs `jobs` in one thread while this process holds the file lock at `lock_path`.

    `run_job` runs one job (default: the Celery task, in this thread). Like beat, a job
    first runs one interval after the scheduler took the lock.
    """

    def __init__(
        self,
        jobs: list[Job],
        lock_path: Path,
        *,
        run_job: Callable[[Job], Any] | None = None,
        retry_lock_s: float = 5.0,
        after_job: Callable[[], None] | None = None,
    ) -> None:
        self.jobs = jobs
        self.lock_path = Path(lock_path)
        self.retry_lock_s = retry_lock_s
        self._run_job = run_job or _run_celery_task
        self._after_job = after_job
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self.runs: dict[str, int] = {job.name: 0 for job in jobs}

    @property
    def holds_lock(self) -> bool:
        return self._lock_fd is not None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="modelhub-embedded-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        self._release()

    def _try_lock(self) -> bool:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return True

    def _release(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _loop(self) -> None:
        while not self._try_lock():
            if self._stop.wait(self.retry_lock_s):
                return
        log.info("embedded scheduler: running %d periodic jobs in process %d", len(self.jobs), os.getpid())
        last_run = {job.name: _now() for job in self.jobs}
        while not self._stop.is_set():
            next_check = 60.0
            for job in self.jobs:
                due, next_s = job.schedule.is_due(last_run[job.name])
                if due:
                    last_run[job.name] = _now()
                    self._run(job)
                    if self._stop.is_set():
                        return
                    due, next_s = job.schedule.is_due(last_run[job.name])
                next_check = min(next_check, max(float(next_s), 0.05))
            self._stop.wait(next_check)

    def _run(self, job: Job) -> None:
        started = time.monotonic()
        try:
            self._run_job(job)
        except Exception:  # one failing job must not stop the others
            log.exception("embedded scheduler: %s (%s) failed", job.name, job.task)
        else:
            log.debug("embedded scheduler: %s took %.0f ms", job.name, (time.monotonic() - started) * 1000)
        self.runs[job.name] += 1
        if self._after_job is not None:
            self._after_job()


def _run_celery_task(job: Job) -> None:
    from workers.celery import app  # reads Django's settings: on use, not at this module's import

    result = app.tasks[job.task].apply(args=job.args, kwargs=dict(job.kwargs or {}))
    if result.failed():
        raise RuntimeError(f"{job.task} failed: {result.result!r}")


def _close_db_connections() -> None:
    from django.db import close_old_connections

    close_old_connections()


_SCHEDULER: EmbeddedScheduler | None = None
_START_LOCK = threading.Lock()


def start_embedded() -> EmbeddedScheduler | None:
    """Start this process's scheduler thread when the embedded scheduler is on (no Redis,
    or MODELHUB_EMBEDDED_SCHEDULER=1); None when it is off. Call it in each serving
    process after its fork (the lock belongs to the process that opened it)."""
    global _SCHEDULER
    import django
    from django.apps import apps

    if not apps.ready:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        django.setup()
    from django.conf import settings

    if not settings.EMBEDDED_SCHEDULER:
        return None
    with _START_LOCK:
        if _SCHEDULER is None or _SCHEDULER.lock_path.parent != Path(settings.DATA_DIR):
            _SCHEDULER = EmbeddedScheduler(
                embedded_jobs(),
                Path(settings.DATA_DIR) / LOCK_NAME,
                retry_lock_s=settings.EMBEDDED_SCHEDULER_RETRY_S,
                after_job=_close_db_connections,
            )
            _SCHEDULER.start()
    return _SCHEDULER
