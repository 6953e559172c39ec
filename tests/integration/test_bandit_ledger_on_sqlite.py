"""The bandit ledger's buffered writer on the embedded default as `make run` has it: one
SQLite file, no Redis (inference/bandits/ledger.py, the database store). A process's
decisions wait in its buffer and are written by its flush: at a clean exit (atexit), and
through a write lock another process holds ("database is locked": the flush backs off and
runs its transaction again instead of losing the batch)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT
from tests.integration.test_embedded_sqlite_under_load import embedded_data, embedded_env  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration]

DECISIONS = 100  # under the writer's WAKE_AT (256): only a flush that is asked for writes them
KEY = "pipeline:9:sqlite"
# A web process of the embedded default, reduced to its bandit decisions. "exit": leave at
# once (the atexit flush writes them); "flush": wait for a line on stdin, then flush.
PROCESS = f"""
import sys, django
django.setup()
from inference.bandits import decide, ledger
from inference.bandits.store import DatabaseStore, store
assert isinstance(store(), DatabaseStore) and ledger.buffering()
config = {{"policy": "epsilon_greedy", "epsilon": 0.3, "arms": ["a", "b"]}}
for i in range({DECISIONS}):
    decide("{KEY}", ["a", "b"], config, f"sq-{{i}}", endpoint="iris")
print("decided", ledger.writer().pending(), flush=True)
if sys.argv[1] == "flush":
    sys.stdin.readline()
    ledger.flush_pending()
    print("flushed", ledger.writer().pending(), ledger.writer().dropped["store_unreachable"], flush=True)
"""


@pytest.fixture
def sqlite_data(embedded_data: tuple[Path, dict[str, str]], tmp_path: Path) -> Path:  # noqa: F811
    template, _ = embedded_data
    shutil.copytree(template, tmp_path / "data")
    return tmp_path / "data"


def start(data: Path, mode: str) -> subprocess.Popen[str]:
    env = embedded_env(data)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        MODELHUB_BANDIT_LEDGER_FLUSH_MS="600000",  # buffered; the thread's own flush never comes
        MODELHUB_SQLITE_BUSY_TIMEOUT_S="0.1",  # a held lock is "database is locked" at once
        MODELHUB_LOG_LEVEL="WARNING",
    )
    return subprocess.Popen(
        [sys.executable, "-c", PROCESS, mode],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def written(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db, timeout=30) as conn:
        rows = conn.execute("SELECT count(*) FROM bandits_banditdecision WHERE router_key = ?", (KEY,)).fetchone()
        pulls = conn.execute(
            "SELECT coalesce(sum(a.pulls), 0) FROM bandits_banditarm a JOIN bandits_banditrouter r "
            "ON a.router_id = r.id WHERE r.key = ?",
            (KEY,),
        ).fetchone()
    return rows[0], pulls[0]


def test_a_clean_exit_flushes_the_buffered_decisions(sqlite_data: Path) -> None:
    proc = start(sqlite_data, "exit")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.split() == ["decided", str(DECISIONS)]  # all still buffered when the script ended
    assert written(sqlite_data / "modelhub.sqlite3") == (DECISIONS, DECISIONS)


def test_a_flush_waits_out_a_write_lock_held_by_another_process(sqlite_data: Path) -> None:
    db = sqlite_data / "modelhub.sqlite3"
    proc = start(sqlite_data, "flush")
    assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
    try:
        assert proc.stdout.readline().split() == ["decided", str(DECISIONS)]
        assert written(db) == (0, 0)
        holder = sqlite3.connect(db, timeout=30, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, as another web process's transaction
        proc.stdin.write("go\n")
        proc.stdin.flush()
        seen: list[str] = []
        while not any("database locked, retrying" in line for line in seen):
            line = proc.stderr.readline()
            assert line, "".join(seen)  # the process ended without meeting the lock
            seen.append(line)
        holder.execute("ROLLBACK")  # the other process's transaction ends
        holder.close()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, "".join(seen) + err
    assert out.split() == ["flushed", "0", "0"]  # nothing left, nothing lost
    assert "could not be written" not in err
    assert written(db) == (DECISIONS, DECISIONS)
