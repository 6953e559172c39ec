"""The fault tests' own services: a throw-away Redis and PostgreSQL that a test may restart.

Nothing here touches the shared services on 5432/6379. The module-scoped `stack` runs
the full stack against them, as an operator would: `python -m config.serve` (1 process),
an inference worker, and a Celery worker with an embedded beat (`-B`, the reconciler
every second), all as real processes with their logs under the stack's temp folder.
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[3]


def wait_until(predicate: Any, *, timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class PostgresCluster:
    """A throw-away PostgreSQL cluster (initdb as the postgres user) on a free port."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins or shutil.which("runuser") is None:
            pytest.skip("fault tests need /usr/lib/postgresql/*/bin and runuser")
        self.bin = Path(bins[-1])
        self.folder = Path(tempfile.mkdtemp(prefix="modelhub-faults-pg-"))
        shutil.chown(self.folder, "postgres", "postgres")
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/modelhub"

    def _as_postgres(self, *args: str, timeout: float = 120) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *args]
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=self.folder)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stdout.decode()} {done.stderr.decode()}")

    def init(self) -> None:
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        self._as_postgres(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "modelhub")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "pg.log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except Exception:  # noqa: BLE001 - already stopped
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Stack:
    folder: Path
    redis: RedisServer
    postgres: PostgresCluster
    env: dict[str, str]
    port: int
    keys: dict[str, list[str]]
    token: str
    procs: dict[str, Process] = field(default_factory=dict)

    def spawn(self, name: str, *args: str) -> Process:
        log = self.folder / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = Process(name, proc, log)
        return self.procs[name]

    def start_inference_worker(self) -> Process:
        return self.spawn(
            "inference-worker",
            "-m",
            "workers.inference_worker",
            "--device",
            "cpu",
            "--redis-url",
            self.redis.url,
            "--intra-op-threads",
            "1",
            "--pullers",
            "2",
        )

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} (exit {p.proc.poll()})\n{p.output()}" for p in self.procs.values())

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 15,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body, headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()


IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def v2_body() -> bytes:
    data = [x for row in IRIS_ROWS for x in row]
    return json.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 4], "data": data}]}).encode()


def _run(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout.decode()[-3000:]}\n{done.stderr.decode()[-3000:]}")
    return done.stdout.decode()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if shutil.which("redis-server") is None:
        pytest.skip("fault tests need redis-server")
    folder = Path(tempfile.mkdtemp(prefix="modelhub-faults-"))
    redis = RedisServer(folder)
    postgres = PostgresCluster()
    procs: dict[str, Process] = {}
    try:
        redis.start()
        postgres.init()
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("MODELHUB_", "DATABASE_URL", "REDIS_URL", "CELERY_"))
        }
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            DATABASE_URL=postgres.url,
            REDIS_URL=redis.url,
            MODELHUB_DATA_DIR=str(folder / "data"),
            MODELHUB_ARTIFACT_STORE=str(folder / "artifacts"),
            MODELHUB_CELERY_EAGER="0",
            MODELHUB_POOL_RECONCILE_INTERVAL_S="1",
            MODELHUB_DB_CONNECT_TIMEOUT="2",
            MODELHUB_LOG_LEVEL="WARNING",
            OMP_NUM_THREADS="1",
            MODELHUB_INTRA_OP_THREADS="1",
            PYTHONUNBUFFERED="1",
        )
        _run(env, "manage.py", "migrate", "--noinput")
        seeded = json.loads(
            _run({**env, "MODELHUB_CELERY_EAGER": "1"}, "-m", "tests.integration.faults.seed").splitlines()[-1]
        )
        port = free_port()
        built = Stack(folder, redis, postgres, env, port, seeded["keys"], seeded["token"], procs)
        built.start_inference_worker()
        built.spawn(
            "celery",
            "-m",
            "celery",
            "-A",
            "workers.celery",
            "worker",
            "-B",
            "-s",
            str(folder / "celerybeat-schedule"),
            "-c",
            "1",
            "--pool",
            "prefork",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "info",
        )
        built.spawn("web", "-m", "config.serve", "--port", str(port), "--workers", "1", "--log-level", "warning")

        def pool_answers() -> bool:
            try:
                status, _, _ = built.request(
                    "POST",
                    "/v2/models/iris-pool/infer",
                    v2_body(),
                    {"Content-Type": "application/json", "Authorization": f"Bearer {built.keys['iris-pool'][0]}"},
                    timeout=5,
                )
            except OSError:
                return False
            return status == 200

        try:
            wait_until(pool_answers, timeout=120, what="the worker-pool endpoint to answer 200", every=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{built.logs()}") from None
        yield built
    finally:
        for proc in reversed(list(procs.values())):
            proc.stop()
        redis.stop()
        postgres.destroy()
        shutil.rmtree(folder, ignore_errors=True)
