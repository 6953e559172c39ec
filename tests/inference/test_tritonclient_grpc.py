"""A real public V2 gRPC client (tritonclient.grpc) against a real `python -m inference.grpc_server`.

The same checks as tests/inference/test_tritonclient_against_gunicorn.py (tritonclient.http),
plus the gRPC refusals: wrong dtype and shape, missing, unknown and foreign keys, an
endpoint with nothing ready (UNAVAILABLE with the retry hint), an oversize message.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from django.contrib.auth import get_user_model
from tritonclient.utils import InferenceServerException

from accounts.roles import ML_ENGINEER
from inference import api_keys, endpoints
from tests.conftest import make_user
from tests.inference.conftest import ROWS, iris_served_with_key
from tests.integration.conftest import database_url, free_port, module_rows, spawn_logged

pytestmark = [pytest.mark.integration]
MAX_BYTES = 64 * 1024


class Served:
    def __init__(self, url: str, key: str, other_key: str) -> None:
        self.url, self.key, self.other_key = url, key, other_key

    def client(self) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(self.url)

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {key or self.key}"}


def wait_until_serving(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    client = grpcclient.InferenceServerClient(url)
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.is_server_live():
                return
        except InferenceServerException:  # not listening yet
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the gRPC server did not start:\n{log.read_text()}")
        time.sleep(0.2)


def server_env(artifact_store: Path) -> dict[str, str]:
    from django.conf import settings

    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL or "",
        "MODELHUB_ARTIFACT_STORE": str(artifact_store),
        "MODELHUB_MAX_PREDICT_BYTES": str(MAX_BYTES),
    }


@pytest.fixture(scope="module")
def served(django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The demo iris endpoint, and "empty" (no deployment) with a key of its own: one
    `python -m inference.grpc_server` for the module's tests that only call it."""
    folder = tmp_path_factory.mktemp("grpc")
    with module_rows(django_db_blocker, folder / "artifacts") as writing:
        with writing():
            engineer = make_user(get_user_model(), "erin", ML_ENGINEER)
            key = iris_served_with_key(engineer, "grpc")
            empty = endpoints.endpoint_create(name="empty", user=engineer)
            _, other_key = api_keys.api_key_create(name="other", endpoints=[empty], user=engineer)
        port = free_port()
        log = folder / "grpc.log"
        args = [sys.executable, "-m", "inference.grpc_server", "--host", "127.0.0.1", "--port", str(port)]
        proc = spawn_logged(args, server_env(folder / "artifacts"), log)
        url = f"127.0.0.1:{port}"
        try:
            wait_until_serving(url, proc, log)
            yield Served(url, key, other_key)
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(20)


def rows_input(binary: bool, rows: Any = ROWS, datatype: str = "FP32") -> grpcclient.InferInput:
    data = np.array(rows, dtype=np.float32 if datatype == "FP32" else np.float64)
    tensor = grpcclient.InferInput("X", list(data.shape), datatype)
    if binary:
        tensor.set_data_from_numpy(data)  # raw_input_contents
    else:  # the typed contents field instead of the raw bytes
        tensor._get_tensor().contents.fp32_contents.extend(data.ravel().tolist())
    return tensor


def status_of(exc: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(exc.value.status())


@pytest.mark.parametrize("binary", [True, False], ids=["raw", "typed"])
def test_tritonclient_grpc_infers_unchanged(served: Served, binary: bool) -> None:
    client = served.client()
    headers = served.auth()
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris", headers=headers)
    assert client.get_server_metadata().name == "modelhub"
    metadata = client.get_model_metadata("iris", headers=headers)
    assert (metadata.inputs[0].name, metadata.inputs[0].datatype, list(metadata.inputs[0].shape)) == (
        "X",
        "FP32",
        [-1, 4],
    )
    assert list(metadata.versions) == ["1"]
    outputs = [grpcclient.InferRequestedOutput("label"), grpcclient.InferRequestedOutput("probabilities")]
    result = client.infer("iris", [rows_input(binary)], outputs=outputs, headers=headers, request_id="r1")
    assert result.as_numpy("label").tolist() == [0, 2]
    assert result.as_numpy("probabilities").shape == (2, 3)
    response = result.get_response()
    assert response.id == "r1" and len(response.raw_output_contents) == 2
    pinned = client.infer("iris", [rows_input(binary)], model_version="1", headers=headers)
    assert pinned.get_response().model_version == "1"
    # The x-api-key header works as over REST, and a client deadline is passed on.
    keyed = client.infer("iris", [rows_input(binary)], headers={"x-api-key": served.key}, client_timeout=30)
    assert keyed.as_numpy("label").tolist() == [0, 2]


def test_tritonclient_grpc_sees_a_pin_to_no_ready_version(served: Served) -> None:
    client = served.client()
    with pytest.raises(InferenceServerException, match="serves no ready version '9'") as exc:
        client.infer("iris", [rows_input(True)], model_version="9", headers=served.auth())
    assert status_of(exc) == "StatusCode.NOT_FOUND"
    assert not client.is_model_ready("iris", model_version="9", headers=served.auth())


def test_any_authority_is_served_because_allowed_hosts_guards_the_http_host_only(served: Served) -> None:
    # docs/serving.md, "gRPC": no browser speaks native gRPC (no DNS rebinding) and the
    # service builds no URL from :authority, so the name a client dialled is not checked.
    client = grpcclient.InferenceServerClient(served.url, channel_args=[("grpc.default_authority", "evil.example")])

    result = client.infer("iris", [rows_input(True)], headers=served.auth())

    assert result.as_numpy("label").tolist() == [0, 2]


def test_wrong_shape_and_dtype_are_invalid_argument(served: Served) -> None:
    client = served.client()
    with pytest.raises(InferenceServerException, match=r"expected FP32 \[-1, 4\], got FP32 \[2, 2\]") as exc:
        client.infer("iris", [rows_input(True, rows=[[1.0, 2.0], [3.0, 4.0]])], headers=served.auth())
    assert status_of(exc) == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match=r"expected FP32 \[-1, 4\], got FP64 \[2, 4\]") as exc:
        client.infer("iris", [rows_input(True, datatype="FP64")], headers=served.auth())
    assert status_of(exc) == "StatusCode.INVALID_ARGUMENT"
    short = grpcclient.InferInput("X", [2, 4], "FP32")
    short._get_tensor().contents.fp32_contents.extend([1.0, 2.0])
    with pytest.raises(InferenceServerException, match="needs 8 values, got 2") as exc:
        client.infer("iris", [short], headers=served.auth())
    assert status_of(exc) == "StatusCode.INVALID_ARGUMENT"


def test_keys_are_checked_as_over_rest(served: Served) -> None:
    client = served.client()
    with pytest.raises(InferenceServerException, match="API key is required") as exc:
        client.infer("iris", [rows_input(True)])
    assert status_of(exc) == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException, match="unknown or revoked") as exc:
        client.get_model_metadata("iris", headers=served.auth("mh_app_notakey"))
    assert status_of(exc) == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException, match='not allowed to call endpoint "iris"') as exc:
        client.infer("iris", [rows_input(True)], headers=served.auth(served.other_key))
    assert status_of(exc) == "StatusCode.PERMISSION_DENIED"
    with pytest.raises(InferenceServerException, match="not allowed") as exc:
        client.is_model_ready("iris", headers=served.auth(served.other_key))
    assert status_of(exc) == "StatusCode.PERMISSION_DENIED"
    with pytest.raises(InferenceServerException, match='no endpoint named "nope"') as exc:
        client.infer("nope", [rows_input(True)], headers=served.auth())
    assert status_of(exc) == "StatusCode.NOT_FOUND"


def test_an_endpoint_with_nothing_ready_is_unavailable_with_a_retry_hint(served: Served) -> None:
    client = served.client()
    with pytest.raises(InferenceServerException, match=r"retry after \d+ s") as exc:
        client.infer("empty", [rows_input(True)], headers=served.auth(served.other_key))
    assert status_of(exc) == "StatusCode.UNAVAILABLE"


def test_a_message_over_the_size_limit_is_resource_exhausted(served: Served) -> None:
    rows = np.ones((MAX_BYTES // 16 + 64, 4), dtype=np.float32)  # a little over MAX_BYTES of raw data
    with pytest.raises(InferenceServerException) as exc:
        served.client().infer("iris", [rows_input(True, rows=rows)], headers=served.auth())
    assert status_of(exc) == "StatusCode.RESOURCE_EXHAUSTED"
    # The server still answers afterwards.
    assert served.client().infer("iris", [rows_input(True)], headers=served.auth()).as_numpy("label").tolist() == [0, 2]


def test_config_serve_starts_and_stops_the_grpc_service_with_the_web_server(
    transactional_db: Any, settings: Any, tmp_path: Path, engineer: Any
) -> None:
    key = iris_served_with_key(engineer, "grpc")
    port, grpc_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    env = {**server_env(settings.ARTIFACT_STORE), "MODELHUB_GRPC_PORT": str(grpc_port), "MODELHUB_WEB_WORKERS": "1"}
    args = [sys.executable, "-m", "config.serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = spawn_logged(args, env, log)
    url = f"127.0.0.1:{grpc_port}"
    try:
        wait_until_serving(url, proc, log)
        client = grpcclient.InferenceServerClient(url)
        result = client.infer("iris", [rows_input(True)], headers={"authorization": f"Bearer {key}"})
        assert result.as_numpy("label").tolist() == [0, 2]
        proc.send_signal(15)  # the supervisor stops its web worker and the gRPC process
        assert proc.wait(30) == 0
        with pytest.raises(InferenceServerException):
            client.is_server_live()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(20)
