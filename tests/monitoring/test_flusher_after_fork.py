"""gunicorn forks workers: each child starts its own flusher on its first record, and a lock
held by another thread at fork time does not deadlock the child."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

from tests.integration.conftest import ROOT

SCRIPT = textwrap.dedent("""
    import os, threading, time
    import django
    django.setup()
    from monitoring.flusher import flusher
    from inference.telemetry.recorder import PredictionRecord, record, recorder

    def wait(predicate):
        deadline = time.monotonic() + 20
        while not predicate():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    record(PredictionRecord("parent", "m:1", "primary", 1.0, True))
    assert wait(lambda: flusher.flushes > 0), "parent flusher never flushed"
    holder = threading.Thread(target=lambda: (recorder._lock.acquire(), time.sleep(3), recorder._lock.release()))
    holder.start()
    time.sleep(0.2)  # the lock is held by another thread while we fork
    pid = os.fork()
    if pid == 0:
        ok = not flusher.running  # the parent's thread did not survive the fork
        record(PredictionRecord("child", "m:1", "primary", 1.0, True))
        ok = ok and wait(lambda: flusher.flushes > 0) and flusher.running
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    holder.join()
    print("child-exit", os.waitstatus_to_exitcode(status))
""")


def test_a_forked_child_flushes_its_own_records(redis_client: Any, settings: Any) -> None:
    env = {
        **os.environ,
        "REDIS_URL": settings.REDIS_URL,
        "MODELHUB_MONITORING_FLUSH_INTERVAL_S": "0.1",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert "child-exit 0" in result.stdout, result.stdout + result.stderr
    assert int(redis_client.hget("mh:tot:child|m:1|primary", "count")) == 1
    assert int(redis_client.hget("mh:tot:parent|m:1|primary", "count")) == 1
