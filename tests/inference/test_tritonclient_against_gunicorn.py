"""A real public V2 client (tritonclient.http) against a real gunicorn serving the edge."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.inference.conftest import ROWS, iris_served_with_key
from tests.integration.conftest import database_url

pytestmark = [pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(transactional_db: Any, settings: Any, tmp_path: Path, engineer: Any) -> Iterator[tuple[str, str]]:
    """The demo iris endpoint behind `gunicorn -c platform/gunicorn.conf.py config.wsgi`."""
    key = iris_served_with_key(engineer, "triton")
    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL or "",
        "MODELHUB_ARTIFACT_STORE": str(settings.ARTIFACT_STORE),
        "MODELHUB_BIND": f"127.0.0.1:{port}",
        "MODELHUB_WEB_WORKERS": "1",
        "MODELHUB_WEB_THREADS": "4",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "platform/gunicorn.conf.py", "config.wsgi"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        client = httpclient.InferenceServerClient(url)
        while True:
            try:
                if client.is_server_ready():
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield url, key
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(20)


def rows_input(binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput("X", [2, 4], "FP32")
    tensor.set_data_from_numpy(np.array(ROWS, dtype=np.float32), binary_data=binary)
    return tensor


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_infers_unchanged(served: tuple[str, str], binary: bool) -> None:
    url, key = served
    client = httpclient.InferenceServerClient(url)
    headers = {"Authorization": f"Bearer {key}"}
    assert client.is_server_live() and client.is_model_ready("iris", headers=headers)
    metadata = client.get_model_metadata("iris", headers=headers)
    assert metadata["inputs"][0] == {"name": "X", "datatype": "FP32", "shape": [-1, 4]}
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=binary),
        httpclient.InferRequestedOutput("probabilities", binary_data=binary),
    ]
    result = client.infer("iris", [rows_input(binary)], outputs=outputs, headers=headers)
    assert result.as_numpy("label").tolist() == [0, 2]
    assert result.as_numpy("probabilities").shape == (2, 3)
    pinned = client.infer("iris", [rows_input(binary)], model_version="1", headers=headers)
    assert pinned.get_response()["model_version"] == "1"


def test_tritonclient_sees_v2_errors(served: tuple[str, str]) -> None:
    url, key = served
    client = httpclient.InferenceServerClient(url)
    bad = httpclient.InferInput("X", [2, 2], "FP32")
    bad.set_data_from_numpy(np.ones((2, 2), dtype=np.float32))
    with pytest.raises(InferenceServerException, match=r"expected FP32 \[-1, 4\]"):
        client.infer("iris", [bad], headers={"Authorization": f"Bearer {key}"})
    with pytest.raises(InferenceServerException, match="API key is required"):
        client.infer("iris", [rows_input(True)])


def test_the_simple_json_api_answers_through_gunicorn(served: tuple[str, str]) -> None:
    import urllib.request

    import orjson

    url, key = served
    request = urllib.request.Request(
        f"http://{url}/api/v1/endpoints/iris/predict",
        data=orjson.dumps({"instances": ROWS}),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert orjson.loads(response.read())["outputs"]["label"] == [0, 2]


def test_a_revoked_key_is_refused_by_the_server_process_within_the_cache_window(served: tuple[str, str]) -> None:
    import urllib.error
    import urllib.request

    import orjson

    from inference import api_keys
    from inference.models import ApiKey

    url, key = served

    def status() -> int:
        request = urllib.request.Request(
            f"http://{url}/api/v1/endpoints/iris/predict",
            data=orjson.dumps({"instances": ROWS}),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    assert status() == 200  # the server process has the key cached now
    api_keys.api_key_revoke(key=ApiKey.objects.get(), user=None)  # type: ignore[arg-type]
    deadline = time.monotonic() + 5
    while status() != 401:
        assert time.monotonic() < deadline, "the server kept accepting a revoked key"
        time.sleep(0.1)
    assert [status() for _ in range(5)] == [401] * 5
