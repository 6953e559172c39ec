"""The router is pure: these tests build tables by hand, no database."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from inference.router import RoutingError, table_build
from inference.transport import DeploymentSpec


def spec(deployment_id: int, version: int, role: str = "primary", model: str = "m") -> DeploymentSpec:
    return DeploymentSpec(
        deployment_id=deployment_id,
        endpoint="e",
        model=model,
        version=version,
        role=role,
        weight=0,
        artifact_sha256="0" * 64,
        artifact_path="/nowhere",
        signature={},
    )


def table(revision: int = 1, weights: tuple[int, int] = (80, 20)):  # type: ignore[no-untyped-def]
    return table_build(
        endpoint="e",
        revision=revision,
        routes=[
            (spec(1, 1), "primary", weights[0]),
            (spec(2, 2, "canary"), "canary", weights[1]),
            (spec(3, 3, "shadow"), "shadow", 0),
        ],
        sticky_header="X-Routing-Key",
    )


def test_random_choice_follows_the_weights() -> None:
    rng = random.Random(7)
    counts = Counter(table().choose(rng=rng).version for _ in range(20_000))
    assert 0.78 < counts[1] / 20_000 < 0.82
    assert counts[3] == 0  # the shadow never answers


def test_sticky_keys_spread_by_the_weights() -> None:
    counts = Counter(table().choose(sticky_key=f"user-{i}").version for i in range(20_000))
    assert 0.78 < counts[1] / 20_000 < 0.82


def test_the_same_key_lands_on_the_same_version_while_the_split_is_unchanged() -> None:
    routing = table()
    for i in range(200):
        first = routing.choose(sticky_key=f"user-{i}")
        assert all(routing.choose(sticky_key=f"user-{i}") == first for _ in range(5))
        assert table().choose(sticky_key=f"user-{i}") == first  # a rebuilt table of the same revision


def test_a_new_revision_reshuffles_sticky_keys() -> None:
    before = [table(1, (50, 50)).choose(sticky_key=f"k{i}").version for i in range(500)]
    after = [table(2, (50, 50)).choose(sticky_key=f"k{i}").version for i in range(500)]
    assert before != after


def test_a_pin_picks_that_version_whatever_the_weights() -> None:
    routing = table(weights=(100, 0))
    assert routing.choose(pin="2").version == 2
    assert routing.choose(pin="m:3").version == 3  # a shadow can be called explicitly
    assert routing.choose(pin="2", sticky_key="k").version == 2


def test_an_unknown_pin_is_a_404() -> None:
    with pytest.raises(RoutingError) as refused:
        table().choose(pin="9")
    assert refused.value.status == 404 and "ready versions: 1, 2, 3" in refused.value.message


def test_a_version_number_shared_by_two_models_needs_the_model_name() -> None:
    routing = table_build(
        endpoint="e", revision=1, routes=[(spec(1, 1, model="a"), "primary", 50), (spec(2, 1, model="b"), "canary", 50)]
    )
    assert "1" not in routing.pins
    assert routing.choose(pin="b:1").model == "b"


def test_a_table_without_ready_routes_is_a_503() -> None:
    routing = table_build(endpoint="e", revision=0, routes=[], pending_revision=3)
    with pytest.raises(RoutingError) as refused:
        routing.choose()
    assert refused.value.status == 503 and "revision 3 is still loading" in refused.value.message
