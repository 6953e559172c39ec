"""`decide()`: one bandit decision, its propensity, and its ledger entry.

Each process keeps, per router key, the policy's shares computed from a snapshot of the
arm statistics, refreshed at most every MODELHUB_BANDIT_REFRESH_S (default 1 s: one
Redis read per router per second per process, whatever the traffic). A decision draws an
arm from those shares (a few microseconds) and hands its ledger entry to the process's
ledger writer (inference/bandits/ledger.py), which records it off the request path with
the same Lua call (pulls + 1, the ledger entry with its TTL, the decision log), pipelined
with the others of its flush. Rewards reach the shares at the next refresh, in every process.

If the store cannot be reached the decision is still made, from the last shares (or the
floors and caps applied to a uniform split when there are none), and is not recorded:
serving never fails because of the bandit; feedback for that request is then a 404.
"""

from __future__ import annotations

import bisect
import contextvars
import copy
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings

from inference.bandits import ledger, policies
from inference.bandits.config import RouterConfig, parse
from inference.bandits.policies import ArmStats
from inference.bandits.store import LedgerEntry, store

log = logging.getLogger(__name__)

# The endpoint a prediction is being served for (set by inference.edge for each request),
# recorded with each decision so that feedback is accepted only through that endpoint.
CURRENT_ENDPOINT: contextvars.ContextVar[str] = contextvars.ContextVar("modelhub_bandit_endpoint", default="")


@dataclass(frozen=True, slots=True)
class Decision:
    arm: str
    propensity: float


class _Router:
    __slots__ = ("arms", "config", "cumulative", "expires", "raw", "shares", "stats", "touched")

    def __init__(self, raw: dict[str, Any], arms: list[str], config: RouterConfig) -> None:
        self.raw = copy.deepcopy(raw)
        self.arms = list(arms)
        self.config = config
        self.expires = 0.0
        self.stats: dict[str, ArmStats] = {}
        self.touched: set[str] = set()
        self.set_shares(policies.bounded(np.full(len(arms), 1.0 / len(arms)), config.floor, config.cap))

    def set_shares(self, shares: np.ndarray) -> None:
        self.shares = [float(x) for x in shares]
        total, cumulative = 0.0, []
        for share in self.shares:
            total += share
            cumulative.append(total)
        self.cumulative = cumulative


_routers: dict[str, _Router] = {}
_rng = random.Random()
_np_rng = np.random.default_rng()
_warned_at = 0.0


def seed(value: int) -> None:
    """Make the decisions of this process reproducible (tests, benchmarks); forgets the
    process's cached shares."""
    global _np_rng
    _rng.seed(value)
    _np_rng = np.random.default_rng(value)
    _routers.clear()


def validate_config(config: dict[str, Any]) -> None:
    """Raise a RouterConfigError (400, names the field) unless `config` is a valid router
    step configuration (with its "arms")."""
    parse(config)


def _warn(what: str, exc: Exception) -> None:
    global _warned_at
    now = time.monotonic()
    if now - _warned_at > 10.0:
        _warned_at = now
        log.warning("bandit router: %s failed (%s); deciding from the last known shares", what, exc)


def _refresh(router_key: str, router: _Router, endpoint: str) -> None:
    router.expires = time.monotonic() + float(settings.BANDIT_REFRESH_S)
    try:
        backend = store()
        if endpoint not in router.touched:
            backend.touch(router_key, router.raw, endpoint)
            router.touched.add(endpoint)
        stats = backend.load(router_key)
    except Exception as exc:  # noqa: BLE001 - the bandit never fails a prediction
        _warn("reading the arm statistics", exc)
        return
    router.stats = stats
    ordered = [stats.get(arm, ArmStats()) for arm in router.config.arms]
    router.set_shares(policies.shares(router.config, ordered, _np_rng))


def _router(router_key: str, arms: list[str], config: dict[str, Any]) -> _Router:
    router = _routers.get(router_key)
    if router is None or router.raw != config or router.arms != arms:
        router = _routers[router_key] = _Router(config, arms, parse(config, arms))
    return router


def choose(router_key: str, arms: list[str], config: dict[str, Any], endpoint: str = "") -> Decision:
    """The decision alone (no ledger entry): what `decide()` records."""
    router = _router(router_key, arms, config)
    if time.monotonic() >= router.expires:
        _refresh(router_key, router, endpoint)
    cumulative = router.cumulative
    index = min(bisect.bisect_right(cumulative, _rng.random() * cumulative[-1]), len(cumulative) - 1)
    return Decision(router.config.arms[index], router.shares[index])


def decide(
    router_key: str, arms: list[str], config: dict[str, Any], request_id: str, *, endpoint: str | None = None
) -> Decision:
    """Choose an arm for one request and record it in the feedback ledger.

    `config` is the router step's JSON (docs/pipelines.md, "Routers and feedback"); `arms`
    the names to choose from (they win over config["arms"]). `endpoint` (default: the
    endpoint being served, set by the prediction path) is the only endpoint through which
    feedback for `request_id` is accepted.
    """
    where = endpoint if endpoint is not None else CURRENT_ENDPOINT.get()
    decision = choose(router_key, arms, config, where)
    router = _routers[router_key]
    entry = LedgerEntry(
        router_key,
        decision.arm,
        decision.propensity,
        time.time(),
        where,
        not router.config.frozen,
        router.config.bernoulli,
    )
    if ledger.buffering():  # buffered, written by this process's flusher thread (either store)
        ledger.writer().add(request_id, entry)
        return decision
    try:
        store().record(request_id, entry)
    except Exception as exc:  # noqa: BLE001 - the bandit never fails a prediction
        _warn("recording the decision", exc)
    return decision
