"""Every task name the apps enqueue (config.queue.enqueue, by name) is a registered Celery task."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from config import queue

ROOT = Path(__file__).resolve().parents[2]
APPS = ["accounts", "audit", "config", "dashboard", "inference", "monitoring", "registry", "rollouts", "workers"]


def _enqueued_names() -> dict[str, str]:
    """name -> where, for every `enqueue("<name>", ...)` call in the apps' code."""
    found: dict[str, str] = {}
    for package in APPS:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called != "enqueue" or not node.args:
                    continue
                first = node.args[0]
                assert isinstance(first, ast.Constant) and isinstance(first.value, str), (
                    f"{path}:{node.lineno}: enqueue by a literal task name, so that this test can check it"
                )
                found[first.value] = f"{path.relative_to(ROOT)}:{node.lineno}"
    return found


def test_every_enqueued_task_name_is_a_registered_task() -> None:
    names = _enqueued_names()
    # the service -> task hand-offs that used to import the tasks modules
    assert {
        "inference.deployment_pool_load",
        "registry.model_version_validate",
        "registry.promotion_notify",
        "monitoring.alert_notify",
        "inference.alert_rollback",
    } <= set(names)
    queue.app.loader.import_default_modules()  # every app's tasks.py, as a worker loads them
    unknown = {name: where for name, where in names.items() if name not in queue.app.tasks}
    assert unknown == {}


def test_an_unknown_task_name_is_refused_with_the_name() -> None:
    with pytest.raises(LookupError, match="no Celery task is registered as 'registry.no_such_task'"):
        queue.enqueue("registry.no_such_task", args=[1])
