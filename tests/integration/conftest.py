"""Real service processes for integration tests: a Celery worker on the test database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test.utils import override_settings

from workers.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("integration tests need PostgreSQL (set DATABASE_URL)")
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], name: str, log: Path) -> None:
        self.proc, self.name, self.log = proc, name, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture
def celery_worker(transactional_db: Any, settings: Any, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A real `celery worker` process with 2 pool children, on a queue of its own."""
    if not settings.REDIS_URL:
        pytest.skip("integration tests need Redis (set REDIS_URL)")
    queue = f"control-test-{uuid.uuid4().hex[:8]}"
    name = f"{queue}@%h"
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "MODELHUB_ARTIFACT_STORE": str(settings.ARTIFACT_STORE),
        "MODELHUB_CELERY_EAGER": "0",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery",
        "worker",
        "-Q",
        queue,
        "-n",
        name,
        "-c",
        "2",
        "--pool",
        "prefork",
        "--without-gossip",
        "--without-mingle",
        "-l",
        "info",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    worker = WorkerProcess(proc, name, log)
    previous = (celery_app.conf.task_always_eager, celery_app.conf.task_default_queue)
    celery_app.conf.task_always_eager = False
    celery_app.conf.task_default_queue = queue
    try:
        deadline = time.monotonic() + 60
        while "ready." not in worker.output():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery worker did not start:\n{worker.output()}")
            time.sleep(0.2)
        yield worker
    finally:
        celery_app.conf.task_always_eager, celery_app.conf.task_default_queue = previous
        worker.stop()


def wait_for(predicate: Any, *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn_logged(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A server process in the repository root, in a session of its own (stop it with
    os.killpg), its stdout and stderr into `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@contextmanager
def gunicorn_serving(artifact_store: Path, log: Path) -> Iterator[str]:
    """`gunicorn -c platform/gunicorn.conf.py config.wsgi` (one worker, 4 threads) on a free port,
    on the test database and Redis; yields `127.0.0.1:port` once /v2/health/ready answers 200."""
    from django.conf import settings

    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL or "",
        "MODELHUB_ARTIFACT_STORE": str(artifact_store),
        "MODELHUB_BIND": f"127.0.0.1:{port}",
        "MODELHUB_WEB_WORKERS": "1",
        "MODELHUB_WEB_THREADS": "4",
    }
    proc = spawn_logged([sys.executable, "-m", "gunicorn", "-c", "platform/gunicorn.conf.py", "config.wsgi"], env, log)
    url = f"127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    try:
        deadline = time.monotonic() + 60
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


@contextmanager
def module_rows(django_db_blocker: Any, artifact_store: Path) -> Iterator[Callable[[], AbstractContextManager[None]]]:
    """For a server that a whole module's tests share (one start instead of one per test):
    yields `writing`, a context in which the module's rows are written and committed (the
    server is another process) with uploads validated in-process into `artifact_store`.
    On leaving, every table is emptied, as after a transactional test. The tests that use
    such a server talk to it only; a test that writes rows keeps a server of its own."""

    @contextmanager
    def writing() -> Iterator[None]:
        previous = celery_app.conf.task_always_eager
        celery_app.conf.task_always_eager = True
        try:
            with django_db_blocker.unblock(), override_settings(ARTIFACT_STORE=artifact_store):
                yield
        finally:
            celery_app.conf.task_always_eager = previous

    try:
        yield writing
    finally:
        with django_db_blocker.unblock():
            call_command("flush", interactive=False, verbosity=0)


class RedisServer:
    """redis-server on a free port, no persistence: a restart comes back empty."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        cmd += ["--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._answers, timeout=20, what="redis-server to answer")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # like a crash: nothing saved (there is no persistence anyway)
            self.proc.wait(10)
