"""Reading bandit state back: per-arm statistics, the decision log, cumulative regret."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

from inference.bandits import ledger, policies
from inference.bandits.config import RouterConfig, RouterConfigError, parse
from inference.bandits.policies import ArmStats
from inference.bandits.store import store

SERIES_POINTS = 200
EXPORT_FIELDS = ("request_id", "time", "arm", "propensity", "reward", "reward_count", "rewarded_at")


def routers_for_endpoint(endpoint: str) -> list[dict[str, Any]]:
    """The routers that decided for `endpoint`: key, policy and arms."""
    backend = store()
    out = []
    for key in backend.routers():
        config, endpoints = backend.meta(key)
        if endpoint in endpoints:
            config = config or {}
            out.append(
                {"router": key, "policy": config.get("policy", "epsilon_greedy"), "arms": config.get("arms", [])}
            )
    return out


def router_endpoints(key: str) -> list[str]:
    return store().meta(key)[1]


def _config(raw: dict[str, Any] | None) -> RouterConfig | None:
    try:
        return parse(raw) if raw else None
    except RouterConfigError:  # saved by an older version of the rules: show the numbers only
        return None


def regret_series(rows: list[dict[str, Any]], means: dict[str, float]) -> list[dict[str, Any]]:
    """Cumulative (estimated) regret and pulls per arm over time, at most SERIES_POINTS points.

    Regret of a decision = best arm's mean reward - chosen arm's mean reward, both the
    current estimates (the true means are unknown): sum(max mean - mean[arm]) over the
    decisions so far. Arms with no reward yet count as the best (no regret charged).
    """
    if not rows:
        return []
    best = max(means.values()) if means else 0.0
    step = max(1, len(rows) // SERIES_POINTS)
    regret, pulls, points = 0.0, dict.fromkeys(means, 0), []
    for i, row in enumerate(rows, 1):
        arm = row["arm"]
        regret += best - means.get(arm, best)
        pulls[arm] = pulls.get(arm, 0) + 1
        if i % step == 0 or i == len(rows):
            points.append({"time": row["time"], "decisions": i, "regret": regret, "pulls": dict(pulls)})
    return points


def router_stats(key: str) -> dict[str, Any]:
    ledger.flush_pending()  # this process's buffered decisions count (the pulls, the log)
    backend = store()
    raw, endpoints = backend.meta(key)
    stats = backend.load(key)
    arms = list((raw or {}).get("arms") or sorted(stats))
    for arm in sorted(stats):
        if arm not in arms:
            arms.append(arm)  # an arm removed from the configuration keeps its history
    config = _config(raw)
    ordered = [stats.get(arm, ArmStats()) for arm in arms]
    shares: dict[str, float] = {}
    if config is not None:
        current = policies.shares(config, [stats.get(arm, ArmStats()) for arm in config.arms], np.random.default_rng())
        shares = {arm: float(share) for arm, share in zip(config.arms, current, strict=True)}
    means = {arm: s.mean for arm, s in zip(arms, ordered, strict=True) if s.mean is not None}
    rows = backend.decisions(key)
    return {
        "router": key,
        "config": raw,
        "endpoints": endpoints,
        "arms": [
            {
                "arm": arm,
                "pulls": s.pulls,
                "rewards": s.n,
                "reward_sum": s.s,
                "mean_reward": s.mean,
                "share": shares.get(arm),
                "posterior": policies.posterior(config, s) if config is not None else None,
            }
            for arm, s in zip(arms, ordered, strict=True)
        ],
        "decisions_logged": len(rows),
        "rewarded": sum(1 for row in rows if row["reward"] is not None),
        "series": regret_series(rows, {arm: float(m) for arm, m in means.items()}),
    }


def export_lines(key: str, fmt: str) -> Iterator[bytes]:
    """The decision log of `key` as JSON Lines or CSV (header first): one decision a line,
    with its propensity and the reward fed back (empty when none)."""
    ledger.flush_pending()  # as in router_stats
    rows = store().decisions(key)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        yield buffer.getvalue().encode()
        for row in rows:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow(row)
            yield buffer.getvalue().encode()
        return
    for row in rows:
        yield orjson.dumps({"router": key, **row}) + b"\n"
