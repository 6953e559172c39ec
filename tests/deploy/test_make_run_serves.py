"""`make run`'s own command lines, run as they are (SQLite, no Redis): the platform answers.

The commands are read from `make -n run`, so a change to the Makefile is what is tested.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from config import serving

pytestmark = [pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_run_commands() -> list[str]:
    venv = Path(sys.prefix)
    out = subprocess.run(
        ["make", "-s", "-n", "-o", f"{venv}/.installed", "run", f"VENV={venv}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def embedded_env(tmp_path: Path, port: int) -> dict[str, str]:
    """A fresh machine's environment: no database or Redis configured, a data folder of its own."""
    unset = ("DATABASE_URL", "REDIS_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHUB_") and k not in unset}
    env.update(MODELHUB_DATA_DIR=str(tmp_path / "data"), MODELHUB_BIND=f"127.0.0.1:{port}", PYTHONUNBUFFERED="1")
    return env


def test_make_run_serves_the_demo_endpoint_and_the_dashboard(tmp_path: Path) -> None:
    commands = make_run_commands()
    assert commands[-1].endswith("-m config.serve"), commands  # the fast front is what make run serves with
    port = free_port()
    env = embedded_env(tmp_path, port)
    printed = ""
    for command in commands[:-1]:
        done = subprocess.run(command, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        printed += done.stdout
    key = re.search(r"API key \(shown once\): (\S+)", printed)
    password = re.search(r"admin account created: admin / (\S+)", printed)
    assert key and password, printed

    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            shlex.split(commands[-1]), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        answer = None
        while answer is None or answer.status_code != 200:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
            try:
                answer = requests.post(
                    f"{base}/api/v1/endpoints/iris/predict",
                    json={"instances": [[5.1, 3.5, 1.4, 0.2]]},
                    headers={"Authorization": f"Bearer {key.group(1)}"},
                    timeout=10,
                )
            except requests.ConnectionError:
                continue
        assert answer.json()["outputs"]["species"] == ["setosa"]

        processes = serving.web_processes()
        assert serving.describe(processes) in log.read_text()  # the split the sessions use, logged at start

        browser = requests.Session()
        browser.get(f"{base}/login/", timeout=10)
        signed_in = browser.post(
            f"{base}/login/",
            data={
                "username": "admin",
                "password": password.group(1),
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            },
            headers={"Referer": f"{base}/login/"},
            timeout=10,
        )
        assert signed_in.url == f"{base}/", signed_in.text[:500]
        for page in ("/", "/models/", "/endpoints/iris/", "/monitoring/iris/", "/alerts/", "/admin/", "/api/docs/"):
            assert browser.get(base + page, timeout=30).status_code == 200, page
        assert browser.get(f"{base}/static/admin/css/base.css", timeout=10).status_code == 200
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
