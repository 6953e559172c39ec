"""The README runs itself: every shell and Python block in README.md, in order, against a
server started the way `make run` starts it (SQLite, no Redis, the bootstrap, config.serve).

The blocks run in ONE bash session, as a reader pastes them into one terminal: shell
variables carry from block to block, Python blocks run as `python - <<EOF` from that shell
(so they see only what the shell exported). Three things differ from a reader's terminal,
and only these: `localhost:8000` / `127.0.0.1:8000` point at the test's server on a free
port; `curl` fails on an HTTP error (`--fail-with-body`), so a snippet that a server
refuses fails the test instead of printing an error the reader might miss; the server's
admin password is the README's placeholder for the one `make run` prints. A block that
cannot run here (compose, kubectl, a long-running server) says why in a
`<!-- no-test: reason -->` line right above it.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^<!--\s*no-test:(.*?)-->\s*$")
SHELL, PYTHON = {"bash", "sh", "shell", "console"}, {"python", "py", "python3"}
# The README's placeholder for the password `make run` prints on its first start.
ADMIN_PASSWORD = "the-admin-password-printed-by-make-run"
HOSTS = ("localhost:8000", "127.0.0.1:8000")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    no_test: str | None  # the reason, when marked


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, each with the no-test reason right above it."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        above = start - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        marked = MARKER.match(lines[above].strip()) if above >= 0 else None
        blocks.append(Block(start + 1, opening.group(1).lower(), "\n".join(body), marked.group(1) if marked else None))
    return blocks


def runnable(blocks: list[Block]) -> list[Block]:
    return [b for b in blocks if b.lang in SHELL | PYTHON and b.no_test is None]


def test_every_shell_and_python_block_runs_or_says_why_not() -> None:
    blocks = readme_blocks(README.read_text())
    marked = [b for b in blocks if b.no_test is not None]
    for block in marked:
        assert block.no_test.strip(), f"README.md:{block.line}: a no-test marker needs a reason"
        assert block.lang in SHELL | PYTHON, f"README.md:{block.line}: no-test on a block that is never run"
    unlabelled = [b.line for b in blocks if not b.lang]
    assert not unlabelled, f"README.md: blocks without a language at lines {unlabelled} (bash, python, text...)"
    assert len(runnable(blocks)) >= 5, "the README should have runnable blocks: did the parser break?"


def test_the_parser_reads_markers_and_languages() -> None:
    text = (
        "x\n<!-- no-test: starts a server -->\n\n```bash\nmake run\n```\n```python\nprint(1)\n```\n```json\n{}\n```\n"
    )
    blocks = readme_blocks(text)
    assert [(b.lang, b.no_test, b.code) for b in blocks] == [
        ("bash", " starts a server ", "make run"),
        ("python", None, "print(1)"),
        ("json", None, "{}"),
    ]
    assert [b.line for b in runnable(blocks)] == [7]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "MODELHUB_"))}
    for name in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)  # make run's embedded default: SQLite, no Redis
    env |= {
        "MODELHUB_DATA_DIR": str(data_dir),
        "MODELHUB_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MODELHUB_BIND": f"127.0.0.1:{port}",
        "MODELHUB_WEB_WORKERS": "1",  # frugal on a shared machine; make run starts one per core (max 4)
        "PYTHONUNBUFFERED": "1",
    }
    return env


@pytest.fixture
def made_run(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    """What `make run` does: migrate, bootstrap (admin, demo model, `iris` endpoint), serve."""
    port = free_port()
    env = server_env(tmp_path / "var", port)
    python = sys.executable
    for step in (["manage.py", "migrate", "--noinput"], ["manage.py", "modelhub_bootstrap"]):
        done = subprocess.run([python, *step], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{' '.join(step)} failed:\n{done.stdout}\n{done.stderr}"
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [python, "-m", "config.serve"],  # what `make run` serves with
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/api/v1/health/live", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.3)
        yield base, env, log
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(5)


def session_script(blocks: list[Block], port: int, python: str) -> str:
    """One bash script: the blocks in order, each announced on stderr with its line."""
    parts = [
        "set -euo pipefail",
        'curl() { command curl --fail-with-body "$@"; }',
        f'export PATH={shlex.quote(str(Path(python).parent))}:"$PATH"',
    ]
    for n, block in enumerate(blocks):
        code = block.code
        for host in HOSTS:
            code = code.replace(host, f"127.0.0.1:{port}")
        parts.append(f"echo '>>> README.md:{block.line} ({block.lang})' >&2")
        if block.lang in PYTHON:
            end = f"README_PYTHON_{n}"
            parts.append(f"{shlex.quote(python)} - <<'{end}'\n{code}\n{end}")
        else:
            parts.append(code)
    parts.append("echo '>>> README done' >&2")
    return "\n".join(parts) + "\n"


@pytest.mark.integration
def test_the_readme_runs_against_a_fresh_make_run(made_run: tuple[str, dict[str, str], Path], tmp_path: Path) -> None:
    base, env, log = made_run
    blocks = runnable(readme_blocks(README.read_text()))
    # The reader's checkout: blocks may call `.venv/bin/python manage.py ...`; files they
    # write (model.onnx...) land here, not in the repository.
    work = tmp_path / "checkout"
    work.mkdir()
    for name in ("manage.py", ".venv"):
        if (ROOT / name).exists():
            (work / name).symlink_to(ROOT / name)
    script = session_script(blocks, int(base.rsplit(":", 1)[1]), sys.executable)
    (tmp_path / "readme.sh").write_text(script)
    done = subprocess.run(
        ["bash", str(tmp_path / "readme.sh")],
        cwd=work,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = f"{done.stdout[-6000:]}\n--- stderr ---\n{done.stderr[-6000:]}"
    failed_at = [line for line in done.stderr.splitlines() if line.startswith(">>> ")][-1:]
    assert done.returncode == 0, (
        f"the README failed at {failed_at}:\n{output}\n--- server log ---\n{log.read_text(errors='replace')[-3000:]}"
    )
    assert ">>> README done" in done.stderr

    # make run's embedded scheduler runs beat's jobs, heartbeat included: the Alerts page
    # has nothing to warn about (it would if rules could never fire).
    check = "from monitoring.selectors import scheduler_status; print(scheduler_status()['running'])"
    deadline = time.monotonic() + 90
    while True:
        status = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", check], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if status.stdout.strip().endswith("True"):  # after the shell's "N objects imported" line
            break
        assert time.monotonic() < deadline, f"no scheduler heartbeat on make run:\n{status.stderr[-2000:]}"
        time.sleep(3)
