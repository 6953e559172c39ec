"""Each policy, with a fixed seed, moves traffic to the better arm; floors, caps, freeze."""

from __future__ import annotations

import random

import numpy as np
import pytest

from inference.bandits import RouterConfigError, validate_config
from inference.bandits.config import parse
from inference.bandits.policies import ArmStats, bounded, shares
from tests.inference.bandit_helpers import bandit_state, simulate  # noqa: F401 - fixture

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("bandit_state")]

ARMS = ["a", "b"]


def bernoulli(arm: str, env: random.Random) -> float:
    return 1.0 if env.random() < {"a": 0.3, "b": 0.6}[arm] else 0.0


def gaussian(arm: str, env: random.Random) -> float:
    return env.gauss({"a": 1.0, "b": 1.5}[arm], 1.0)


@pytest.mark.parametrize(
    ("policy", "extra", "reward"),
    [
        ("epsilon_greedy", {"epsilon": 0.2, "decay": 0.01}, bernoulli),
        ("thompson_bernoulli", {}, bernoulli),
        ("thompson_gaussian", {}, gaussian),
        ("ucb1", {}, bernoulli),
    ],
)
def test_the_better_arms_share_of_traffic_converges(policy: str, extra: dict, reward: object) -> None:
    config = {"policy": policy, "arms": ARMS, **extra}
    chosen = simulate(f"pipeline:1:{policy}", config, reward, 1200)  # type: ignore[arg-type]
    early, late = chosen[:200].count("b") / 200, chosen[-300:].count("b") / 300
    assert late > 0.75, (policy, early, late)
    assert late > early, (policy, early, late)


def test_a_floor_keeps_the_worse_arm_served_and_a_cap_limits_the_better_one() -> None:
    config = {"policy": "epsilon_greedy", "epsilon": 0.0, "arms": ARMS, "floor": {"a": 0.2}, "cap": {"b": 0.7}}
    chosen = simulate("pipeline:1:bounds", config, bernoulli, 800)
    late = chosen[-400:].count("a") / 400
    assert 0.22 <= late <= 0.38  # a gets 0.3: b's cap, above a's floor
    parsed = parse(config)
    assert bounded(np.array([0.0, 1.0]), parsed.floor, parsed.cap).tolist() == pytest.approx([0.3, 0.7])


def test_propensities_are_the_probability_of_the_choice() -> None:
    config = parse({"policy": "epsilon_greedy", "epsilon": 0.3, "arms": ["a", "b", "c"]})
    stats = [ArmStats(10, 10, 2), ArmStats(10, 10, 8), ArmStats(10, 10, 5)]
    assert shares(config, stats, np.random.default_rng(0)).tolist() == pytest.approx([0.1, 0.8, 0.1])
    ucb = parse({"policy": "ucb1", "arms": ["a", "b"], "floor": 0.05})
    assert shares(ucb, [ArmStats(5, 5, 1), ArmStats(5, 5, 4)], np.random.default_rng(0)).tolist() == pytest.approx(
        [0.05, 0.95]
    )


def test_a_frozen_router_records_feedback_but_does_not_learn() -> None:
    from inference.bandits.store import store

    config = {"policy": "thompson_bernoulli", "arms": ARMS, "frozen": True}
    simulate("pipeline:1:frozen", config, bernoulli, 50)
    stats = store().load("pipeline:1:frozen")
    assert sum(arm.pulls for arm in stats.values()) == 50
    assert sum(arm.n for arm in stats.values()) == 0
    rows = store().decisions("pipeline:1:frozen")
    assert len(rows) == 50 and all(row["reward"] is not None for row in rows)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"policy": "softmax", "arms": ARMS}, "policy"),
        ({"policy": "ucb1", "arms": []}, "arms"),
        ({"policy": "ucb1", "arms": ["a", "a"]}, "arms"),
        ({"arms": ARMS, "epsilon": 1.5}, "epsilon"),
        ({"arms": ARMS, "epsilon": "0.1"}, "epsilon"),
        ({"arms": ARMS, "floor": {"c": 0.1}}, "floor.c"),
        ({"arms": ARMS, "floor": 0.6}, "floor"),
        ({"arms": ARMS, "cap": 0.4}, "cap"),
        ({"arms": ARMS, "floor": {"a": 0.5}, "cap": {"a": 0.4}}, "floor.a"),
        ({"arms": ARMS, "frozen": "yes"}, "frozen"),
        ({"arms": ARMS, "temperature": 1}, "temperature"),
    ],
)
def test_a_bad_configuration_is_a_400_naming_the_field(config: dict, field: str) -> None:
    with pytest.raises(RouterConfigError) as caught:
        validate_config(config)
    assert caught.value.status == 400
    assert caught.value.details["field"] == field
    assert f"router.{field}" in caught.value.message
