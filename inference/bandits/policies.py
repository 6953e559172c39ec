"""The policies: arm statistics in, the share of traffic each arm gets out.

Every policy is written as a probability vector over the arms, computed from a snapshot
of the statistics; a decision draws one arm from it, so the chosen arm's entry *is* the
propensity logged for off-policy evaluation (exact for epsilon-greedy and UCB1; for
Thompson sampling it is P(arm has the highest posterior draw), estimated with
`THOMPSON_DRAWS` Monte-Carlo draws, and drawing from that vector is Thompson sampling up
to that estimate). Floors and caps are applied last (`bounded`). No Django, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from inference.bandits.config import RouterConfig

THOMPSON_DRAWS = 4000


@dataclass(frozen=True, slots=True)
class ArmStats:
    """pulls: decisions that chose the arm; n, s, ss: the rewards it was taught
    (count, sum, sum of squares)."""

    pulls: int = 0
    n: float = 0.0
    s: float = 0.0
    ss: float = 0.0

    @property
    def mean(self) -> float | None:
        return self.s / self.n if self.n > 0 else None


def _best(values: np.ndarray) -> np.ndarray:
    """Uniform over the arms tied for the largest value."""
    top = (values == values.max()).astype(float)
    out: np.ndarray = top / top.sum()
    return out


def _unexplored(stats: list[ArmStats], minimum: float) -> np.ndarray | None:
    fresh = np.array([arm.n < minimum for arm in stats], dtype=float)
    return fresh / fresh.sum() if fresh.any() else None


def epsilon_greedy(config: RouterConfig, stats: list[ArmStats]) -> np.ndarray:
    """epsilon_t = epsilon / (1 + decay * N) (N: rewards taught so far); explore uniformly
    with epsilon_t, else the best mean (arms never rewarded count as mean 0)."""
    taught = sum(arm.n for arm in stats)
    eps = config.epsilon / (1.0 + config.decay * taught)
    means = np.array([arm.mean if arm.mean is not None else 0.0 for arm in stats])
    return eps / len(stats) + (1.0 - eps) * _best(means)


def ucb1(config: RouterConfig, stats: list[ArmStats]) -> np.ndarray:
    """Each arm once first (uniform over those never rewarded), then the largest
    mean + sqrt(2 ln N / n)."""
    fresh = _unexplored(stats, 1.0)
    if fresh is not None:
        return fresh
    total = sum(arm.n for arm in stats)
    scores = np.array([arm.s / arm.n + math.sqrt(2.0 * math.log(total) / arm.n) for arm in stats])
    return _best(scores)


def beta_params(arm: ArmStats) -> tuple[float, float]:
    """Beta(1 + successes, 1 + failures); a reward r in [0, 1] counts r and 1 - r."""
    return 1.0 + arm.s, 1.0 + max(arm.n - arm.s, 0.0)


def gaussian_params(arm: ArmStats) -> tuple[float, float, float] | None:
    """The posterior of the arm's mean reward under a flat prior: mean, scale, degrees of
    freedom of a Student t (None until the arm has two rewards)."""
    if arm.n < 2:
        return None
    mean = arm.s / arm.n
    var = max(arm.ss / arm.n - mean * mean, 0.0) * arm.n / (arm.n - 1)
    return mean, math.sqrt(max(var, 1e-12) / arm.n), arm.n - 1


def thompson(config: RouterConfig, stats: list[ArmStats], rng: np.random.Generator) -> np.ndarray:
    """P(arm's posterior draw is the largest), estimated with THOMPSON_DRAWS draws."""
    if config.bernoulli:
        params = [beta_params(arm) for arm in stats]
        draws = np.stack([rng.beta(a, b, THOMPSON_DRAWS) for a, b in params])
    else:
        fresh = _unexplored(stats, 2.0)
        if fresh is not None:  # an arm with fewer than two rewards has no posterior yet: try it
            return fresh
        gauss = [gaussian_params(arm) for arm in stats]
        draws = np.stack([m + sd * rng.standard_t(df, THOMPSON_DRAWS) for m, sd, df in gauss])  # type: ignore[misc]
    winners = np.bincount(draws.argmax(axis=0), minlength=len(stats))
    return winners / THOMPSON_DRAWS


def bounded(shares: np.ndarray, floor: tuple[float, ...], cap: tuple[float, ...]) -> np.ndarray:
    """The shares moved as little as needed into [floor, cap] per arm, summing to 1:
    clip, then add the missing mass to the arms below their cap in proportion to their
    share (evenly when they have none), or take the surplus from the arms above their floor
    in proportion to what they have above it; repeat until it balances."""
    low, high = np.array(floor), np.array(cap)
    q = np.clip(np.asarray(shares, dtype=float), low, high)
    for _ in range(2 * len(q) + 2):
        diff = 1.0 - q.sum()
        if abs(diff) < 1e-12:
            break
        if diff > 0:
            room = high - q
            weights = np.where(room > 1e-15, q, 0.0)
            if weights.sum() <= 0:
                weights = (room > 1e-15).astype(float)
        else:
            room = q - low
            weights = np.where(room > 1e-15, room, 0.0)
        move = abs(diff) * weights / weights.sum()
        move = np.minimum(move, room)
        q = q + move if diff > 0 else q - move
    q = np.clip(q, 0.0, 1.0)
    out: np.ndarray = q / q.sum()
    return out


def shares(config: RouterConfig, stats: list[ArmStats], rng: np.random.Generator) -> np.ndarray:
    if config.policy == "epsilon_greedy":
        base = epsilon_greedy(config, stats)
    elif config.policy == "ucb1":
        base = ucb1(config, stats)
    else:
        base = thompson(config, stats, rng)
    return bounded(base, config.floor, config.cap)


def posterior(config: RouterConfig, arm: ArmStats) -> dict[str, float | None]:
    """What the stats page shows of an arm's posterior (or its UCB1/greedy estimate)."""
    if config.policy == "thompson_bernoulli":
        a, b = beta_params(arm)
        return {"alpha": a, "beta": b}
    gauss = gaussian_params(arm)
    if gauss is None:
        return {"mean": arm.mean, "scale": None, "df": None}
    mean, scale, df = gauss
    return {"mean": mean, "scale": scale, "df": df}
