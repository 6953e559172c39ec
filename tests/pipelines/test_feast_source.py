"""Feature lookups from a real Feast feature server (`feast serve` of its own venv, over HTTP).

The server holds cards 101-104 (tests/pipelines/feast_server.py): 103's country_risk is
NULL, 104 is ten days old. Card 999 is not in Feast."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from inference import endpoints, traffic
from inference.pipelines import services as pipeline_services
from tests.conftest import client_for
from tests.pipelines.feast_server import CARDS, FeastServer, build_repo

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(900)]  # the first test may build Feast's venv
FEATURES = ["avg_amount", "tx_count", "country_risk"]
DEFAULTS = {"avg_amount": -1.0, "tx_count": -2.0, "country_risk": -3.0}


@pytest.fixture(scope="session")
def feast_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repo(tmp_path_factory.mktemp("feast"))


@pytest.fixture(scope="session")
def feast_server(feast_repo: Path) -> Iterator[FeastServer]:
    server = FeastServer(feast_repo)
    yield server
    server.stop()


@pytest.fixture
def allow(settings: Any) -> Any:
    """Lets the platform call the given servers (MODELHUB_FEAST_SERVERS)."""

    def allow(*urls: str) -> None:
        settings.FEAST_SERVERS = list(urls)

    return allow


def spec(url: str, on_missing: str = "refuse", **lookup: Any) -> dict[str, Any]:
    source = lookup.pop("source", None) or {
        "kind": "feast",
        "url": url,
        "feature_refs": [f"card_stats:{f}" for f in FEATURES],
        "entity_key": "card_id",
    }
    step: dict[str, Any] = {
        "name": "lookup",
        "kind": "feature_lookup",
        "key": "card",
        "feature_set": "cards-feast",
        "features": FEATURES,
        "source": source,
        "timeout_ms": 2000,
        "on_missing": on_missing,
        **lookup,
    }
    if on_missing == "default":
        step["defaults"] = DEFAULTS
    return {
        "inputs": [{"name": "card", "datatype": "INT64", "shape": [-1]}],
        "outputs": FEATURES,
        "steps": [step],
    }


def serve(engineer: Any, pipeline_spec: dict[str, Any], name: str) -> str:
    pipeline_services.pipeline_create(name=name, spec=pipeline_spec, user=engineer)
    endpoint = endpoints.endpoint_create(name=name, user=engineer, require_key=False)
    traffic.traffic_policy_revise(
        endpoint=endpoint, routes=[{"pipeline": name, "version": 1, "role": "primary", "weight": 100}], user=engineer
    )
    return name


def predict(client: Any, name: str, cards: list[int]) -> Any:
    body = orjson.dumps({"inputs": {"card": cards}})
    return client.post(f"/api/v1/endpoints/{name}/predict", body, content_type="application/json")


def row(card: int) -> list[float]:
    avg, count, risk, _ = CARDS[card]
    return [avg, float(count), risk if risk is not None else float("nan")]


def outputs(response: Any) -> list[float]:
    """The answer's rows, flattened: [avg_amount, tx_count, country_risk] per row."""
    assert response.status_code == 200, response.content
    body = response.json()["outputs"]
    return [v for r in zip(*(body[f] for f in FEATURES), strict=True) for v in r]


def rows(*values: list[float]) -> Any:
    return pytest.approx([v for r in values for v in r])


def test_a_batch_is_looked_up_in_one_call_to_the_feast_server(
    client: Any, engineer: Any, feast_server: FeastServer, allow: Any
) -> None:
    allow(feast_server.url)
    name = serve(engineer, spec(feast_server.url), "feast-refs")
    before = feast_server.lookups_served()
    got = outputs(predict(client, name, [102, 101, 102]))
    assert got == rows(row(102), row(101), row(102))
    assert feast_server.lookups_served() == before + 1  # three rows, two entities, one POST


def test_a_feature_service_names_the_features(
    client: Any, engineer: Any, feast_server: FeastServer, allow: Any
) -> None:
    allow(feast_server.url + "/")  # a trailing "/" names the same server
    source = {"kind": "feast", "url": feast_server.url, "feature_service": "fraud_features", "entity_key": "card_id"}
    name = serve(engineer, spec(feast_server.url, source=source), "feast-service")
    assert outputs(predict(client, name, [101])) == rows(row(101))


def test_an_entity_feast_does_not_know_follows_on_missing(
    client: Any, engineer: Any, feast_server: FeastServer, allow: Any
) -> None:
    allow(feast_server.url)
    strict = serve(engineer, spec(feast_server.url), "feast-strict")
    answer = predict(client, strict, [101, 999])
    assert answer.status_code == 404, answer.content
    error = answer.json()["error"]
    assert error["code"] == "unknown_entity" and 'entity "999"' in error["message"] and "is unknown" in error["message"]
    lenient = serve(engineer, spec(feast_server.url, on_missing="default"), "feast-defaults")
    assert outputs(predict(client, lenient, [999, 101])) == rows(list(DEFAULTS.values()), row(101))


def test_a_null_feature_follows_on_missing(client: Any, engineer: Any, feast_server: FeastServer, allow: Any) -> None:
    allow(feast_server.url)
    answer = predict(client, serve(engineer, spec(feast_server.url), "feast-null-strict"), [103])
    assert answer.status_code == 404, answer.content
    assert (
        'entity "103" of feature set "cards-feast" has feature "country_risk" NULL in Feast'
        in answer.json()["error"]["message"]
    )
    lenient = serve(engineer, spec(feast_server.url, on_missing="default"), "feast-null-defaults")
    avg, count, _, _ = CARDS[103]
    assert outputs(predict(client, lenient, [103])) == rows([avg, float(count), DEFAULTS["country_risk"]])


def test_a_value_older_than_max_age_follows_on_missing(
    client: Any, engineer: Any, feast_server: FeastServer, allow: Any
) -> None:
    allow(feast_server.url)
    strict = serve(engineer, spec(feast_server.url, max_age_s=86400), "feast-age-strict")
    assert outputs(predict(client, strict, [101])) == rows(row(101))  # an hour old: fresh
    answer = predict(client, strict, [104])  # ten days old
    assert answer.status_code == 404, answer.content
    assert (
        'entity "104"' in answer.json()["error"]["message"] and "max_age_s=86400" in answer.json()["error"]["message"]
    )
    lenient = serve(engineer, spec(feast_server.url, on_missing="default", max_age_s=86400), "feast-age-defaults")
    assert outputs(predict(client, lenient, [104, 101])) == rows(list(DEFAULTS.values()), row(101))


def test_a_killed_feast_server_follows_on_missing(client: Any, engineer: Any, feast_repo: Path, allow: Any) -> None:
    server = FeastServer(feast_repo)  # a server of its own, killed halfway
    try:
        allow(server.url)
        lenient = serve(engineer, spec(server.url, on_missing="default"), "feast-killed-defaults")
        strict = serve(engineer, spec(server.url), "feast-killed-strict")
        assert outputs(predict(client, lenient, [101])) == rows(row(101))  # a pooled connection now
        assert outputs(predict(client, strict, [101])) == rows(row(101))
    finally:
        server.stop()
    assert outputs(predict(client, lenient, [101])) == rows(list(DEFAULTS.values()))
    answer = predict(client, strict, [101])
    assert answer.status_code == 503, answer.content
    assert answer.json()["error"]["code"] == "feature_store_unavailable" and answer["Retry-After"]


@pytest.fixture
def silent_server(silent_port: int) -> str:
    """A Feast address that accepts connections and never answers (a hung server)."""
    return f"http://127.0.0.1:{silent_port}"


def test_a_hung_feast_server_follows_on_missing_within_the_timeout(
    client: Any, engineer: Any, silent_server: str, allow: Any
) -> None:
    allow(silent_server)
    lenient = serve(engineer, spec(silent_server, on_missing="default", timeout_ms=100), "feast-hung-defaults")
    assert outputs(predict(client, lenient, [101])) == rows(list(DEFAULTS.values()))
    answer = predict(client, serve(engineer, spec(silent_server, timeout_ms=100), "feast-hung-strict"), [101])
    assert answer.status_code == 503, answer.content
    assert "Timeout" in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"source": {"kind": "feast", "url": "ftp://feast:6566", "feature_service": "s"}}, "source.url"),
        ({"source": {"kind": "feast", "url": "http://u:p@feast:6566", "feature_service": "s"}}, "source.url"),
        ({"source": {"kind": "feast", "url": "http://feast:6566"}}, "either feature_service or feature_refs"),
        (
            {"source": {"kind": "feast", "url": "http://feast:6566", "feature_service": "s", "feature_refs": ["v:a"]}},
            "either feature_service or feature_refs",
        ),
        ({"source": {"kind": "feast", "url": "http://feast:6566", "feature_refs": ["avg_amount"]}}, '"view:feature"'),
        (
            {"source": {"kind": "feast", "url": "http://feast:6566", "feature_refs": ["card_stats:avg_amount"]}},
            "no ref names the feature(s) tx_count, country_risk",
        ),
        ({"source": {"kind": "feast", "url": "http://feast:6566", "feature_service": "s", "ttl": 1}}, "unknown field"),
        ({"source": {"kind": "feast", "url": "http://feast:6566", "feature_service": "a b"}}, "feature_service"),
        (
            {"source": {"kind": "feast", "url": "http://feast:6566", "feature_service": "s", "entity_key": 1}},
            "entity_key",
        ),
        ({"source": {"kind": "hive"}}, "source.kind"),
        ({"source": {"kind": "feast", "url": "http://feast:6566", "feature_service": "s"}}, "impute"),
        ({"source": {"kind": "feast", "url": "http://elsewhere:6566", "feature_service": "s"}}, "not a Feast server"),
    ],
)
def test_a_bad_feast_source_is_refused_when_saved(
    engineer: Any, allow: Any, change: dict[str, Any], message: str
) -> None:
    allow("http://feast:6566")
    body = spec("http://feast:6566", **change)
    if message == "impute":
        body["steps"][0]["on_missing"] = "impute"
    response = client_for(engineer).post("/api/v1/pipelines/", {"name": "bad-feast", "spec": body}, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_pipeline" and message in error["message"] and 'step "lookup"' in error["message"]


def test_no_feast_server_may_be_called_until_the_operator_lists_it(engineer: Any, allow: Any) -> None:
    allow()
    body = spec("http://feast:6566")
    response = client_for(engineer).post("/api/v1/pipelines/", {"name": "feast-unlisted", "spec": body}, format="json")
    assert response.status_code == 400, response.content
    assert "MODELHUB_FEAST_SERVERS is empty" in response.json()["error"]["message"]
    allow("http://feast:6566")
    response = client_for(engineer).post("/api/v1/pipelines/", {"name": "feast-listed", "spec": body}, format="json")
    assert response.status_code == 201, response.content
