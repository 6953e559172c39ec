"""A real public V2 client (tritonclient.http) against a real gunicorn serving the edge."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from django.contrib.auth import get_user_model
from tritonclient.utils import InferenceServerException

from accounts.roles import ML_ENGINEER
from tests.conftest import make_user
from tests.inference.conftest import ROWS, iris_served_with_key
from tests.integration.conftest import gunicorn_serving, module_rows

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def served(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """The demo iris endpoint behind `gunicorn -c platform/gunicorn.conf.py config.wsgi`,
    one server for the module's tests that only call it."""
    folder = tmp_path_factory.mktemp("triton")
    with module_rows(django_db_blocker, folder / "artifacts") as writing:
        with writing():
            key = iris_served_with_key(make_user(get_user_model(), "erin", ML_ENGINEER), "triton")
        with gunicorn_serving(folder / "artifacts", folder / "gunicorn.log") as url:
            yield url, key


@pytest.fixture
def served_alone(transactional_db: Any, settings: Any, tmp_path: Path, engineer: Any) -> Iterator[tuple[str, str]]:
    """The same, with a server of its own, for a test that changes rows under it."""
    key = iris_served_with_key(engineer, "triton")
    with gunicorn_serving(settings.ARTIFACT_STORE, tmp_path / "gunicorn.log") as url:
        yield url, key


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


def test_a_revoked_key_is_refused_by_the_server_process_within_the_cache_window(
    served_alone: tuple[str, str],
) -> None:
    import urllib.error
    import urllib.request

    import orjson

    from inference import api_keys
    from inference.models import ApiKey

    url, key = served_alone

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
