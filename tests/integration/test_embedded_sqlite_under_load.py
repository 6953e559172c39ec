"""The embedded default's layout (gunicorn, 2 web processes, one SQLite file, no Redis) under
concurrent predictions, uploads and key creation: nothing dropped, nothing left pending.

Before WAL, a busy timeout and IMMEDIATE transactions, this layout lost monitoring records
and left uploads `validating` for good ("database is locked"), and nothing swept them.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.inference.conftest import iris_variant
from tests.integration.conftest import ROOT, WorkerProcess, free_port, wait_for

pytestmark = [pytest.mark.integration]

PREDICTORS, PREDICTIONS_EACH = 4, 150
UPLOADERS, UPLOADS_EACH = 2, 4
KEY_MAKERS, KEYS_EACH = 3, 10
UPLOADS, KEYS = UPLOADERS * UPLOADS_EACH, KEY_MAKERS * KEYS_EACH
SETUP = """
import json
from django.contrib.auth import get_user_model
from accounts.services import user_token_create
from inference import api_keys
from inference.models import Endpoint
admin = get_user_model().objects.get(username="admin")
_, token = user_token_create(user=admin, name="load")
_, key = api_keys.api_key_create(name="load", endpoints=[Endpoint.objects.get(name="iris")], user=admin)
print(json.dumps({"token": token, "key": key}))
"""


def embedded_env(data: Path, port: int = 0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "MODELHUB_ARTIFACT_STORE")}
    env.update(
        MODELHUB_DATA_DIR=str(data),
        MODELHUB_ADMIN_PASSWORD="admin-pass-123",
        MODELHUB_BIND=f"127.0.0.1:{port}",
        MODELHUB_WEB_WORKERS="2",
        MODELHUB_WEB_THREADS="8",
        MODELHUB_MONITORING_FLUSH_INTERVAL_S="0.05",
        MODELHUB_VALIDATION_SWEEP_INTERVAL_S="1",
        MODELHUB_VALIDATION_LEASE_S="3",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="session")
def embedded_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A data dir as `make run` leaves it (migrate, bootstrap) with an admin token and a key
    for `iris`: built once a session, copied by each test (the three commands took 13 s).
    A fresh `make run` on an empty data dir is tests/readme's and tests/deploy's business."""
    data = tmp_path_factory.mktemp("embedded") / "data"
    env = embedded_env(data)
    manage = [sys.executable, "manage.py"]
    for command in (["migrate", "--noinput"], ["modelhub_bootstrap"]):
        subprocess.run(manage + command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    setup = subprocess.run(
        [*manage, "shell", "-c", SETUP], cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=120
    )
    return data, json.loads(setup.stdout.strip().splitlines()[-1])


@pytest.fixture
def embedded(embedded_data: tuple[Path, dict[str, str]], tmp_path: Path) -> Any:
    """`make run`'s layout on its own copy of the data dir: gunicorn with 2 workers."""
    template, credentials = embedded_data
    shutil.copytree(template, tmp_path / "data")
    port = free_port()
    env = embedded_env(tmp_path / "data", port)
    log = tmp_path / "gunicorn.log"
    cmd = [sys.executable, "-m", "gunicorn", "-c", "platform/gunicorn.conf.py", "config.wsgi"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = WorkerProcess(proc, "gunicorn", log)
    url = f"http://127.0.0.1:{port}"

    def live() -> bool:
        assert proc.poll() is None, server.output()
        try:
            return requests.get(f"{url}/api/v1/health/live", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(live, timeout=60, what="gunicorn")
        yield url, credentials, tmp_path / "data" / "modelhub.sqlite3", server
    finally:
        server.stop()


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(sql).fetchall()


def test_two_web_processes_on_one_sqlite_file_drop_nothing_under_load(embedded: Any) -> None:
    url, credentials, db, server = embedded
    token = {"Authorization": f"Bearer {credentials['token']}"}
    assert requests.post(f"{url}/api/v1/models/", json={"name": "load"}, headers=token, timeout=30).status_code == 201

    def predict(_: int) -> list[int]:
        session = requests.Session()
        body = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
        headers = {"X-API-Key": credentials["key"]}
        return [
            session.post(f"{url}/api/v1/endpoints/iris/predict", json=body, headers=headers, timeout=60).status_code
            for _ in range(PREDICTIONS_EACH)
        ]

    def upload(n: int) -> int:
        files = {"artifact": ("model.onnx", iris_variant(100 + n), "application/octet-stream")}
        return requests.post(f"{url}/api/v1/models/load/versions/", files=files, headers=token, timeout=120).status_code

    def key(n: int) -> int:
        body = {"name": f"key-{n}"}
        return requests.post(f"{url}/api/v1/endpoints/iris/keys/", json=body, headers=token, timeout=60).status_code

    with ThreadPoolExecutor(PREDICTORS + UPLOADERS + KEY_MAKERS) as pool:
        predictions = [pool.submit(predict, i) for i in range(PREDICTORS)]
        uploads = [pool.submit(upload, n) for n in range(UPLOADS)]
        keys = [pool.submit(key, n) for n in range(KEYS)]
        statuses = [code for future in predictions for code in future.result()]
        upload_statuses = [future.result() for future in uploads]
        key_statuses = [future.result() for future in keys]

    sent = PREDICTORS * PREDICTIONS_EACH
    assert statuses == [200] * sent, server.output()[-3000:]
    assert upload_statuses == [201] * UPLOADS and key_statuses == [201] * KEYS, server.output()[-3000:]

    def versions() -> list[tuple[Any, ...]]:
        return query(
            db,
            "select v.status, count(*) from registry_modelversion v join registry_registeredmodel m "
            "on v.model_id = m.id where m.name = 'load' group by v.status",
        )

    wait_for(lambda: versions() == [("ready", UPLOADS)], timeout=90, what=f"every upload ready (now {versions()})")

    def recorded() -> int:
        return query(db, "select coalesce(sum(count), 0) from monitoring_metricrollup where endpoint = 'iris'")[0][0]

    # Every prediction sent is counted once: the flushers of both processes dropped nothing.
    wait_for(lambda: recorded() >= sent, timeout=30, what=f"{sent} records flushed (now {recorded()})")
    assert recorded() == sent
    assert query(db, "select count(*) from inference_apikey")[0][0] == 1 + 1 + KEYS  # demo + setup + sent
    assert "database is locked" not in server.output()

    # The embedded scheduler runs beat's jobs in exactly one of the two processes: a
    # validation whose worker "died" (lease lapsed) is swept and decided again.
    with sqlite3.connect(db, timeout=30) as conn:
        conn.execute(
            "update registry_modelversion set status = 'validating', validation_attempts = 1, "
            "validation_lease_until = '2000-01-01 00:00:00' where id = (select max(id) from registry_modelversion)"
        )
    wait_for(lambda: versions() == [("ready", UPLOADS)], timeout=60, what="the embedded sweep to decide it again")
    assert server.output().count("embedded scheduler: running") == 1, server.output()[-3000:]
