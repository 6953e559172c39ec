"""A real Feast feature server for the tests of the Feast source.

Feast does not install into the platform's venv (feast 0.67.0 requires pandas<3; the
platform pins pandas 3), so it gets a venv of its own at a fixed path keyed by its version,
built on first use from the package index (one to three minutes) and kept across runs
(`python -m tests.pipelines.feast_server` builds it ahead). A feature repo is
written in a temporary folder: a Parquet file (the file offline source), a SQLite online
store, `feast apply`, `feast materialize-incremental`, then `feast serve` on a free port.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

FEAST_VERSION = "0.67.0"
VENV = Path(f"/tmp/modelhub-feast-venv-{FEAST_VERSION}")
READY = VENV / ".modelhub-ready"
INSTALL_TIMEOUT_S = 900

# card_id -> (avg_amount, tx_count, country_risk or None, age in hours)
CARDS: dict[int, tuple[float, int, float | None, float]] = {
    101: (40.0, 12, 0.1, 1.0),
    102: (900.0, 3, 0.8, 2.0),
    103: (15.0, 40, None, 1.0),  # country_risk is NULL in Feast
    104: (77.0, 5, 0.4, 240.0),  # ten days old: past a max_age_s of a day
}

FEATURE_REPO = """
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Float32, Int64

card = Entity(name="card", join_keys=["card_id"])
card_stats = FeatureView(
    name="card_stats",
    entities=[card],
    ttl=timedelta(days=3650),
    schema=[Field(name="avg_amount", dtype=Float32), Field(name="tx_count", dtype=Int64),
            Field(name="country_risk", dtype=Float32)],
    source=FileSource(path="data/cards.parquet", timestamp_field="event_timestamp"),
    online=True,
)
fraud_features = FeatureService(name="fraud_features", features=[card_stats])
"""

STORE_YAML = """project: modelhub_test
registry: data/registry.db
provider: local
online_store:
  type: sqlite
  path: data/online.db
offline_store:
  type: file
entity_key_serialization_version: 3
"""


def feast_env(home: Path) -> dict[str, str]:
    # Its own HOME: gunicorn's control socket goes there, not into the runner's home.
    return {**os.environ, "FEAST_USAGE": "False", "HOME": str(home), "PYTHONUNBUFFERED": "1"}


def ensure_venv() -> Path:
    """The venv's `feast` command, installed on first use (one builder at a time)."""
    feast = VENV / "bin" / "feast"
    if READY.exists():
        return feast
    with open(f"{VENV}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if READY.exists():
            return feast
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120)
        done = subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "-q", f"feast=={FEAST_VERSION}"],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pip install feast=={FEAST_VERSION} failed:\n{done.stderr[-3000:]}")
        READY.write_text(FEAST_VERSION)
    return feast


def write_repo(root: Path, now: dt.datetime) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = root / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(STORE_YAML)
    (repo / "features.py").write_text(FEATURE_REPO)
    ids = list(CARDS)
    pq.write_table(
        pa.table(
            {
                "card_id": pa.array(ids, pa.int64()),
                "avg_amount": pa.array([CARDS[c][0] for c in ids], pa.float32()),
                "tx_count": pa.array([CARDS[c][1] for c in ids], pa.int64()),
                "country_risk": pa.array([CARDS[c][2] for c in ids], pa.float32()),
                "event_timestamp": pa.array(
                    [now - dt.timedelta(hours=CARDS[c][3]) for c in ids], pa.timestamp("us", tz="UTC")
                ),
            }
        ),
        repo / "data" / "cards.parquet",
    )
    return repo


def build_repo(root: Path) -> Path:
    """A feature repo, applied and materialized into its SQLite online store."""
    feast = ensure_venv()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    repo = write_repo(root, now)
    env = feast_env(root)
    for args in (["apply"], ["materialize-incremental", (now + dt.timedelta(seconds=1)).isoformat()]):
        done = subprocess.run([str(feast), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"feast {args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return repo


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FeastServer:
    """`feast serve` of a repo on a free port, in a process group of its own."""

    def __init__(self, repo: Path) -> None:
        self.repo, self.port = repo, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = repo.parent / f"serve-{self.port}.log"
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                [
                    str(VENV / "bin" / "feast"),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                ],
                cwd=repo,
                env=feast_env(repo.parent),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"feast serve exited {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"feast serve did not answer /health in 120 s:\n{self.log.read_text()[-3000:]}")

    def lookups_served(self) -> int:
        """POSTs to get-online-features in the server's access log so far."""
        return self.log.read_text().count('"POST /get-online-features HTTP/1.1"')

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 9)  # the group this server was started in (gunicorn and its worker)
            self.process.wait(timeout=30)


if __name__ == "__main__":  # build the venv ahead of a test run (scripts/test.sh: in the background)
    started = time.monotonic()
    print(f"feast {FEAST_VERSION} venv: {ensure_venv().parent.parent} ({time.monotonic() - started:.0f} s)")
