"""The Celery app, and the one way the apps enqueue work: by the task's registered name.

The apps sit below the worker wiring (workers/celery.py adds the beat schedule and the
queue routes to this app), and a service never imports its own app's tasks module: the
tasks call the services, so importing them back would be a cycle. `enqueue` looks the
task up in the app's registry instead; tests/workers/test_enqueued_names.py checks that
every name the code enqueues is a registered task.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("modelhub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Batch chunks run on the `batch` queue (docs/batch.md). Here, not in workers/celery.py:
# the web processes that send them never import the worker wiring.
app.conf.task_routes = {
    **(app.conf.task_routes or {}),
    "batch.job_plan": {"queue": "batch"},
    "batch.chunk_run": {"queue": "batch"},
    "batch.job_finalize": {"queue": "batch"},
}


def eager() -> bool:
    """Tasks run in the caller's process (unit tests, `make run` without a worker)."""
    return bool(app.conf.task_always_eager)


def enqueue(
    task_name: str,
    *,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    queue: str | None = None,
    countdown: float | None = None,
) -> None:
    """Send the registered task `task_name` (or run it now when tasks are eager)."""
    if task_name not in app.tasks:
        # A web process has imported only the tasks modules something needed so far;
        # load every app's tasks.py, as a worker does when it starts.
        app.loader.import_default_modules()
    if task_name not in app.tasks:
        raise LookupError(f"no Celery task is registered as {task_name!r}")
    options: dict[str, Any] = {}
    if queue is not None:
        options["queue"] = queue
    if countdown is not None:
        options["countdown"] = countdown
    app.tasks[task_name].apply_async(args=list(args), kwargs=dict(kwargs or {}), **options)
