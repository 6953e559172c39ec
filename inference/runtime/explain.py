"""KernelSHAP for tabular models: pure numpy, no Django, no I/O.

A prediction f(x) is split into per-feature attributions phi with
sum(phi) = f(x) - E[f(background)]. KernelSHAP (Lundberg and Lee, 2017) evaluates the
model on coalitions z of features (features in z take the instance's values, the others
a background row's), averages over the background rows, and fits the attributions by a
weighted linear regression of those averages on z with the Shapley kernel weights
(d - 1) / (C(d, |z|) |z| (d - |z|)), the efficiency constraint held exactly.

- With few features (2^d - 2 coalitions within the budget) every coalition is
  evaluated: the answer is the exact interventional Shapley value against the
  background (for a linear model, w_i (x_i - mean of the background's x_i)).
- Otherwise coalitions are sampled, sizes in proportion to their total kernel weight,
  each together with its complement ("paired sampling"), and weighted by how often
  they were drawn.

The model is called through `evaluate(rows) -> outputs`: every row every instance needs
is built first and evaluated in chunks, so an explanation costs a few batched calls.
The caller's `evaluate` decides the chunking (the data plane passes the batched ONNX
Runtime path); `ModelCalls` counts what it did.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Evaluate = Callable[[np.ndarray], np.ndarray]  # (n, d) rows -> (n, k) outputs


class ExplainBudgetError(ValueError):
    """The evaluation budget cannot hold one coalition per feature."""


@dataclass(frozen=True)
class Explanation:
    """Attributions of one instance, for every output column (k)."""

    phi: np.ndarray  # (d, k)
    base_value: np.ndarray  # (k,): mean model output over the background
    prediction: np.ndarray  # (k,): the model output for the instance
    exact: bool  # every coalition was evaluated


@dataclass(frozen=True)
class Plan:
    masks: np.ndarray  # (m, d) bool: the coalitions (neither empty nor full)
    weights: np.ndarray  # (m,) regression weights
    exact: bool


def shapley_kernel(d: int, size: int) -> float:
    """The Shapley kernel weight of one coalition of `size` of `d` features."""
    return (d - 1) / (math.comb(d, size) * size * (d - size))


def coalitions_for(d: int, budget: int, rng: np.random.Generator) -> Plan:
    """The coalitions to evaluate: all of them when 2^d - 2 <= budget, else a sample."""
    if d < 2:
        return Plan(np.zeros((0, d), dtype=bool), np.zeros(0), True)
    full = 2**d - 2 if d < 31 else budget + 1
    if full <= budget:
        codes = np.arange(1, 2**d - 1, dtype=np.int64)
        masks = ((codes[:, None] >> np.arange(d, dtype=np.int64)) & 1).astype(bool)
        sizes = masks.sum(axis=1)
        weights = np.array([shapley_kernel(d, int(s)) for s in sizes])
        return Plan(masks, weights, True)
    if budget < d:
        raise ExplainBudgetError(f"the budget allows {budget} coalitions; {d} features need at least {d}")
    sizes = np.arange(1, d)
    size_weight = (d - 1) / (sizes * (d - sizes))  # total kernel weight of all coalitions of a size
    probabilities = size_weight / size_weight.sum()
    drawn: dict[bytes, list[object]] = {}
    pairs = budget // 2
    for _ in range(pairs * 4):  # bounded: duplicates are counted, not redrawn forever
        if len(drawn) >= 2 * pairs:
            break
        size = int(rng.choice(sizes, p=probabilities))
        mask = np.zeros(d, dtype=bool)
        mask[rng.choice(d, size=size, replace=False)] = True
        for member in (mask, ~mask):
            key = member.tobytes()
            if key in drawn:
                drawn[key][1] = int(drawn[key][1]) + 1  # type: ignore[call-overload]
            else:
                drawn[key] = [member, 1]
    masks = np.array([entry[0] for entry in drawn.values()], dtype=bool)
    weights = np.array([float(entry[1]) for entry in drawn.values()])  # type: ignore[arg-type]
    return Plan(masks, weights, False)


def rows_for(x: np.ndarray, background: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Every row one instance needs: the background (for the base value), then for each
    coalition the background with the coalition's features set to the instance's, then
    the instance itself. (1 + m) * B + 1 rows."""
    b = background.shape[0]
    blocks = np.repeat(background[None, :, :], masks.shape[0] + 1, axis=0)  # (1 + m, B, d)
    chosen = np.concatenate([np.zeros((1, masks.shape[1]), dtype=bool), masks])[:, None, :]
    blocks = np.where(chosen, x[None, None, :], blocks)
    return np.concatenate([blocks.reshape(-1, x.shape[0]), x[None, :]]).reshape((masks.shape[0] + 1) * b + 1, -1)


def solve(plan: Plan, means: np.ndarray, base: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Weighted least squares with sum(phi) = prediction - base held exactly.

    `means` (m, k) are the coalitions' mean outputs. The last feature's attribution is
    eliminated through the constraint, the others fitted; (d, k) attributions.
    """
    d = plan.masks.shape[1]
    total: np.ndarray = prediction - base  # (k,)
    if d == 1:
        return total.reshape(1, -1)
    z = plan.masks.astype(float)
    y = means - base[None, :] - z[:, -1:] * total[None, :]
    design = z[:, :-1] - z[:, -1:]
    root = np.sqrt(plan.weights)[:, None]
    head, *_ = np.linalg.lstsq(design * root, y * root, rcond=None)  # (d - 1, k)
    last: np.ndarray = total[None, :] - head.sum(axis=0, keepdims=True)
    return np.vstack([head, last])


def kernel_shap(
    instances: np.ndarray,
    background: np.ndarray,
    evaluate: Evaluate,
    *,
    max_evaluations: int,
    seed: int = 0,
) -> list[Explanation]:
    """Explain each row of `instances` (n, d) against `background` (B, d).

    At most `max_evaluations` model rows per instance: (1 + m) * B + 1 with m coalitions.
    All instances' rows go to `evaluate` together (it chunks them).
    """
    instances = np.asarray(instances, dtype=float)
    background = np.asarray(background, dtype=float)
    n, d = instances.shape
    b = background.shape[0]
    if b < 1:
        raise ExplainBudgetError("the background is empty")
    budget = (max_evaluations - 1) // b - 1
    if d >= 2 and budget < 1:
        raise ExplainBudgetError(
            f"max_evaluations {max_evaluations} cannot hold one coalition with a background of {b} rows"
        )
    plan = coalitions_for(d, max(budget, 0), np.random.default_rng(seed))
    per_instance = (plan.masks.shape[0] + 1) * b + 1
    rows = np.concatenate([rows_for(x, background, plan.masks) for x in instances])
    outputs = np.asarray(evaluate(rows), dtype=float)
    if outputs.ndim == 1:
        outputs = outputs[:, None]
    explanations = []
    for i in range(n):
        part = outputs[i * per_instance : (i + 1) * per_instance]
        blocks = part[:-1].reshape(plan.masks.shape[0] + 1, b, -1).mean(axis=1)  # (1 + m, k)
        base, means, prediction = blocks[0], blocks[1:], part[-1]
        phi = solve(plan, means, base, prediction)
        explanations.append(Explanation(phi=phi, base_value=base, prediction=prediction, exact=plan.exact))
    return explanations
