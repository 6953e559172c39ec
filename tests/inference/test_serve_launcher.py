"""`python -m config.serve`: the ASGI front in two processes, a SO_REUSEPORT socket each."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.inference.conftest import ROWS, iris_served_with_key
from tests.integration.conftest import ROOT, database_url, free_port

pytestmark = [pytest.mark.integration]


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, key: str, log: Path) -> None:
        self.proc, self.port, self.key, self.log = proc, port, key, log

    def workers(self) -> list[int]:
        """Pids of the supervisor's live web workers."""
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) != self.proc.pid or fields[0] == "Z":
                continue
            try:
                if b"resource_tracker" in (entry / "cmdline").read_bytes():  # multiprocessing's helper
                    continue
            except OSError:
                continue
            out.append(int(entry.name))
        return sorted(out)

    def established_per_worker(self) -> dict[int, int]:
        """ESTABLISHED connections to our port, by the worker process that holds them."""
        return self._sockets_per_worker("01")

    def listening_workers(self) -> int:
        """Workers whose own socket listens (a worker listens only once its warm-up is done)."""
        return sum(1 for n in self._sockets_per_worker("0A").values() if n)

    def _sockets_per_worker(self, state: str) -> dict[int, int]:
        """Sockets on our port in this TCP state (/proc/net/tcp: 01 ESTABLISHED, 0A LISTEN), by worker."""
        inodes: dict[str, int] = {}
        for pid in self.workers():
            try:
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes[target[8:-1]] = pid
            except OSError:
                continue
        counts = dict.fromkeys(self.workers(), 0)
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            parts = line.split()
            local_port = int(parts[1].split(":")[1], 16)
            if local_port == self.port and parts[3] == state and parts[9] in inodes:
                counts[inodes[parts[9]]] += 1
        return counts

    def infer(self, conn: http.client.HTTPConnection | None = None) -> tuple[int, dict[str, Any]]:
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        body = json.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 4], "data": sum(ROWS, [])}]})
        conn.request(
            "POST",
            "/v2/models/iris/infer",
            body,
            {"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"},
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())


def start(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "config.serve", "--port", str(port), "--workers", "2", "--log-level", "warning"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture
def served(transactional_db: Any, settings: Any, tmp_path: Path, engineer: Any) -> Iterator[Served]:
    key = iris_served_with_key(engineer, "serve")
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL or "",
        "MODELHUB_ARTIFACT_STORE": str(settings.ARTIFACT_STORE),
    }
    log = tmp_path / "serve.log"
    proc = start(port, env, log)
    server = Served(proc, port, key, log)
    server.env = env  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 90
        # Both listening, not only answering: until the second one has warmed up and listens,
        # the kernel gives every new connection to the first (seen: 64/0).
        while len(server.workers()) < 2 or server.listening_workers() < 2 or not _answers(server):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"config.serve did not start:\n{log.read_text()}")
            time.sleep(0.3)
        yield server
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(40)


def _answers(server: Served) -> bool:
    try:
        return server.infer()[0] == 200
    except OSError:
        return False


def test_both_processes_take_a_share_of_the_connections(served: Served) -> None:
    """64 keep-alive connections opened at once land on both processes, not on whichever woke first."""
    connections = [http.client.HTTPConnection("127.0.0.1", served.port, timeout=10) for _ in range(64)]
    try:
        for conn in connections:  # all at once, as a load balancer's pool or wrk opens them
            conn.connect()
        for conn in connections:
            status, answer = served.infer(conn)
            assert status == 200, answer
            assert answer["model_version"] == "1"
        counts = served.established_per_worker()
        assert sum(counts.values()) == 64, counts
        assert len(counts) == 2 and min(counts.values()) >= 16, counts  # a hash split; 0/64 has odds of 2**-63
    finally:
        for conn in connections:
            conn.close()


def test_a_worker_that_dies_is_replaced_and_the_other_keeps_answering(served: Served) -> None:
    victim, survivor = served.workers()
    os.kill(victim, signal.SIGKILL)
    # Connections already queued on the victim's own socket when it dies are reset (see
    # config/serve.py); once it is gone, every new connection must be answered. "Gone" is
    # reaped, not zombie: a zombie leader can still have threads holding its socket open.
    gone_by = time.monotonic() + 15
    while Path(f"/proc/{victim}").exists() and time.monotonic() < gone_by:
        time.sleep(0.05)
    answered = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, _ = served.infer()  # new connection each time: the kernel routes around the dead socket
        assert status == 200
        answered += 1
        workers = served.workers()
        if len(workers) == 2 and victim not in workers and _answers(served):
            break
        time.sleep(0.2)
    workers = served.workers()
    assert survivor in workers and victim not in workers and len(workers) == 2, served.log.read_text()
    assert answered > 0


def test_a_second_server_on_the_same_port_refuses_to_start(served: Served, tmp_path: Path) -> None:
    """SO_REUSEPORT would let it join the port and take half the connections: it must not."""
    log = tmp_path / "second.log"
    second = start(served.port, served.env, log)  # type: ignore[attr-defined]
    assert second.wait(30) == 2
    assert "already answers" in log.read_text()
