"""POST /api/v1/models/{name}/versions/{v}/reference: JSON tensors, JSON rows or CSV."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from tests.monitoring.conftest import make_version

pytestmark = pytest.mark.django_db

SIGNATURE = {"inputs": [{"name": "x", "dtype": "float32", "shape": [None, 2]}], "outputs": []}
URL = "/api/v1/models/iris/versions/1/reference"


def test_json_tensors_become_per_feature_bins_and_a_sample(api: Any) -> None:
    make_version(signature=SIGNATURE)
    body = {"inputs": {"x": [[i, 100 - i] for i in range(100)]}, "outputs": {"label": [0, 1] * 50}}
    response = api.post(URL, body, format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert set(data["features"]) == {"x[0]", "x[1]"} and data["rows"] == 100
    assert sum(data["features"]["x[0]"]["counts"]) == 100 and "sample" not in data["features"]["x[0]"]
    assert data["outputs"]["label"]["counts"] == {"0": 50, "1": 50}
    assert AuditEvent.objects.filter(action="model_version.reference_set").count() == 1
    assert set(api.get(URL).json()["features"]) == {"x[0]", "x[1]"}


def test_csv_columns_map_to_the_single_input_in_order(api: Any) -> None:
    version = make_version(signature=SIGNATURE)
    csv = "sepal,petal\n" + "\n".join(f"{i},{i * 2}" for i in range(50))
    response = api.post(URL, csv, content_type="text/csv")
    assert response.status_code == 201, response.content
    version.refresh_from_db()
    assert set(version.reference_stats["features"]) == {"x[0]", "x[1]"}
    assert len(version.reference_stats["features"]["x[1]"]["sample"]) == 50


def test_json_rows_with_input_names_keep_their_names(api: Any) -> None:
    make_version(signature={"inputs": [{"name": "age"}, {"name": "income"}]})
    rows = [{"age": i, "income": i * 10} for i in range(30)]
    response = api.post(URL, {"rows": rows}, format="json")
    assert response.status_code == 201 and set(response.json()["features"]) == {"age", "income"}


@pytest.mark.parametrize(
    "body, content_type, message",
    [
        ({"rows": [{"a": "x"}]}, None, "must be numbers"),
        ({"rows": []}, None, "non-empty list"),
        ({"rows": [[1, 2], [3]]}, None, "every row needs"),
        ({"inputs": {"x": [["a"]]}}, None, "numeric"),
        ({"other": 1}, None, "non-empty list"),
        ("a,b\n", "text/csv", "at least one data row"),
        ("a,b\n1,zz\n", "text/csv", "must be numbers"),
    ],
)
def test_bad_reference_data_is_refused(api: Any, body: Any, content_type: str | None, message: str) -> None:
    make_version(signature=SIGNATURE)
    if content_type:
        response = api.post(URL, body, content_type=content_type)
    else:
        response = api.post(URL, body, format="json")
    assert response.status_code == 400, response.content
    assert message in response.json()["error"]["message"]


def test_unknown_version_is_404_and_viewers_cannot_upload(api: Any, viewer: Any) -> None:
    from tests.conftest import client_for

    assert api.post(URL, {"rows": [[1]]}, format="json").status_code == 404
    make_version(signature=SIGNATURE)
    assert client_for(viewer).post(URL, {"rows": [[1, 2]]}, format="json").status_code == 403
