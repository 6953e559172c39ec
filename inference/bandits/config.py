"""A router step's configuration: parsed and checked once, then cached by the router.

The schema is documented in docs/pipelines.md, "Routers and feedback". Every refusal is
a `RouterConfigError` (400) that names the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from common.errors import BadRequest

POLICIES = ("epsilon_greedy", "thompson_bernoulli", "thompson_gaussian", "ucb1")
_KEYS = {"policy", "epsilon", "decay", "floor", "cap", "frozen", "arms"}


class RouterConfigError(BadRequest):
    code = "invalid_router"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"router.{field}: {message}", details={"field": field})


@dataclass(frozen=True, slots=True)
class RouterConfig:
    policy: str
    arms: tuple[str, ...]
    epsilon: float
    decay: float
    floor: tuple[float, ...]
    cap: tuple[float, ...]
    frozen: bool

    @property
    def bernoulli(self) -> bool:
        return self.policy == "thompson_bernoulli"


def _number(config: dict[str, Any], field: str, default: float, low: float, high: float) -> float:
    value = config.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RouterConfigError(field, f"expected a number, got {value!r}")
    if not low <= value <= high:
        raise RouterConfigError(field, f"expected a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _bounds(config: dict[str, Any], field: str, arms: tuple[str, ...], default: float) -> tuple[float, ...]:
    value = config.get(field)
    if value is None:
        return (default,) * len(arms)
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(arms))
        if unknown:
            raise RouterConfigError(f"{field}.{unknown[0]}", f"not an arm of this router (arms: {', '.join(arms)})")
        shares = []
        for arm in arms:
            share = value.get(arm, default)
            if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= share <= 1.0:
                raise RouterConfigError(f"{field}.{arm}", f"expected a share in [0, 1], got {share!r}")
            shares.append(float(share))
        return tuple(shares)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise RouterConfigError(field, f"expected a share in [0, 1] or an object {{arm: share}}, got {value!r}")
    return (float(value),) * len(arms)


def parse(config: Any, arms: list[str] | tuple[str, ...] | None = None) -> RouterConfig:
    """The checked configuration. `arms` (the pipeline's arms) wins over config["arms"]."""
    if not isinstance(config, dict):
        raise RouterConfigError("config", f"expected an object, got {type(config).__name__}")
    unknown = sorted(set(config) - _KEYS)
    if unknown:
        raise RouterConfigError(unknown[0], f"unknown field (allowed: {', '.join(sorted(_KEYS))})")
    policy = config.get("policy", "epsilon_greedy")
    if policy not in POLICIES:
        raise RouterConfigError("policy", f"expected one of {', '.join(POLICIES)}, got {policy!r}")
    raw_arms = list(arms) if arms is not None else config.get("arms")
    if not isinstance(raw_arms, list | tuple) or not raw_arms:
        raise RouterConfigError("arms", "expected a non-empty list of arm names")
    for arm in raw_arms:
        if not isinstance(arm, str) or not arm or len(arm) > 200 or "|" in arm:
            raise RouterConfigError(
                "arms", f"an arm is a non-empty name of at most 200 characters without '|', got {arm!r}"
            )
    if len(set(raw_arms)) != len(raw_arms):
        raise RouterConfigError("arms", "arm names must be distinct")
    names = tuple(raw_arms)
    epsilon = _number(config, "epsilon", 0.1, 0.0, 1.0)
    decay = _number(config, "decay", 0.0, 0.0, 1e9)
    floor = _bounds(config, "floor", names, 0.0)
    cap = _bounds(config, "cap", names, 1.0)
    for arm, low, high in zip(names, floor, cap, strict=True):
        if low > high:
            raise RouterConfigError(f"floor.{arm}", f"the floor {low:g} is above the cap {high:g}")
    if sum(floor) > 1.0 + 1e-9:
        raise RouterConfigError("floor", f"the floors add up to {sum(floor):g}, more than 1")
    if sum(cap) < 1.0 - 1e-9:
        raise RouterConfigError("cap", f"the caps add up to {sum(cap):g}, less than 1")
    frozen = config.get("frozen", False)
    if not isinstance(frozen, bool):
        raise RouterConfigError("frozen", f"expected true or false, got {frozen!r}")
    return RouterConfig(policy, names, epsilon, decay, floor, cap, frozen)
