"""Pure statistics: latency percentiles, binning, PSI, two-sample KS, reference statistics.

No Django, no I/O: plain lists and numpy arrays in, plain values out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from inference.telemetry.recorder import LATENCY_BUCKETS_MS

PSI_EPSILON = 1e-4
REFERENCE_BINS = 10
REFERENCE_SAMPLE_CAP = 2000


def latency_percentiles(
    buckets: Sequence[int], quantiles: Iterable[float] = (0.5, 0.95, 0.99), edges: Sequence[float] = LATENCY_BUCKETS_MS
) -> dict[str, float | None]:
    """Quantiles (ms) from per-bucket (not cumulative) counts, as Prometheus' histogram_quantile.

    Linear interpolation inside the bucket; the last ("+Inf") bucket answers with the
    largest finite edge. No observations gives None for every quantile.
    """
    counts = [max(0, int(c)) for c in buckets]
    total = sum(counts)
    out: dict[str, float | None] = {}
    for q in quantiles:
        name = f"p{q * 100:g}".replace(".", "_")
        if total == 0:
            out[name] = None
            continue
        rank = q * total
        cumulative = 0
        value: float = float(edges[-1])
        for i, count in enumerate(counts):
            if count and cumulative + count >= rank:
                if i >= len(edges):
                    value = float(edges[-1])
                else:
                    lower = 0.0 if i == 0 else float(edges[i - 1])
                    upper = float(edges[i])
                    value = lower + (upper - lower) * (rank - cumulative) / count
                break
            cumulative += count
        out[name] = round(value, 4)
    return out


def psi(ref_counts: Sequence[float], cur_counts: Sequence[float], *, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index between two histograms over the same bins.

    Proportions are floored at `epsilon` so that an empty bin gives a large finite
    score instead of infinity. Rules of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 shift.
    """
    ref = np.asarray(ref_counts, dtype=float)
    cur = np.asarray(cur_counts, dtype=float)
    if ref.shape != cur.shape:
        raise ValueError(f"histograms differ in length: {ref.shape[0]} and {cur.shape[0]} bins")
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise ValueError("both histograms need at least one observation")
    p = np.maximum(ref / ref.sum(), epsilon)
    q = np.maximum(cur / cur.sum(), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def _kolmogorov_q(x: float) -> float:
    """Survival function of the Kolmogorov distribution, Q(x) = 2 sum (-1)^(k-1) exp(-2 k^2 x^2)."""
    if x < 1e-3:
        return 1.0
    if x < 1.18:
        # Small x: the alternative theta-function series converges faster.
        y = math.exp(-(math.pi**2) / (8 * x * x))
        s = y + y**9 + y**25 + y**49
        return max(0.0, min(1.0, 1.0 - math.sqrt(2 * math.pi) / x * s))
    total = 0.0
    for k in range(1, 101):
        term = (-1) ** (k - 1) * math.exp(-2 * k * k * x * x)
        total += term
        if abs(term) < 1e-12:
            break
    return max(0.0, min(1.0, 2 * total))


def ks_two_sample(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic D and its asymptotic two-sided p-value.

    D is the largest distance between the two empirical CDFs; the p-value uses the
    Kolmogorov distribution with Stephens' small-sample correction (Numerical Recipes).
    """
    x = np.sort(np.asarray(a, dtype=float).ravel())
    y = np.sort(np.asarray(b, dtype=float).ravel())
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    n, m = x.size, y.size
    if n == 0 or m == 0:
        raise ValueError("both samples need at least one finite value")
    grid = np.concatenate([x, y])
    cdf_x = np.searchsorted(x, grid, side="right") / n
    cdf_y = np.searchsorted(y, grid, side="right") / m
    d = float(np.max(np.abs(cdf_x - cdf_y)))
    en = math.sqrt(n * m / (n + m))
    return d, _kolmogorov_q((en + 0.12 + 0.11 / en) * d)


def quantile_edges(values: np.ndarray, bins: int = REFERENCE_BINS) -> list[float]:
    """Inner edges of (up to) `bins` equal-frequency bins; the outer bins are open-ended."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return []
    inner = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    return [float(e) for e in np.unique(inner)]


def bin_counts(values: np.ndarray, edges: Sequence[float]) -> list[int]:
    """Counts in the bins (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    finite = values[np.isfinite(values)]
    index = np.searchsorted(np.asarray(edges, dtype=float), finite, side="left")
    return [int(c) for c in np.bincount(index, minlength=len(edges) + 1)]


def float_bin(x: float) -> int:
    """A signed quarter-decade bin for an output value of unknown range (0 is its own bin)."""
    ax = abs(x)
    if not math.isfinite(x):
        return 99 if x > 0 else -99
    if ax < 1e-9:
        return 0
    k = min(40, max(-36, math.floor(4 * math.log10(ax))))
    return (k + 37) if x > 0 else -(k + 37)


def float_bins(values: np.ndarray) -> dict[int, int]:
    """Vectorised `float_bin` counts for an array of values."""
    v = np.asarray(values, dtype=float).ravel()
    out: dict[int, int] = {}
    finite = v[np.isfinite(v)]
    if finite.size:
        ax = np.abs(finite)
        with np.errstate(divide="ignore"):
            k = np.clip(np.floor(4 * np.log10(np.where(ax < 1e-9, 1.0, ax))), -36, 40).astype(int) + 37
        idx = np.where(ax < 1e-9, 0, np.where(finite > 0, k, -k))
        keys, counts = np.unique(idx, return_counts=True)
        out.update({int(key): int(c) for key, c in zip(keys, counts, strict=True)})
    inf = v[np.isinf(v)]
    for value in inf:
        key = 99 if value > 0 else -99
        out[key] = out.get(key, 0) + 1
    return out


def float_bin_lower(index: int) -> float:
    """The lower magnitude of a `float_bin` (for labelling a histogram)."""
    if index == 0:
        return 0.0
    k = abs(index) - 37
    value = 10 ** (k / 4)
    return value if index > 0 else -value


def tensor_features(inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Numeric features from a request's input tensors: rows along dim 0.

    A (n,) or (n, 1) tensor is feature `name`; a (n, k) tensor gives `name[0]`..`name[k-1]`;
    higher ranks and non-numeric tensors are skipped (drift is per tabular feature).
    """
    features: dict[str, np.ndarray] = {}
    for name, value in inputs.items():
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf" or arr.ndim == 0 or arr.ndim > 2:
            continue
        if arr.ndim == 1 or arr.shape[1] == 1:
            features[name] = arr.reshape(-1).astype(float)
        elif arr.shape[1] <= 256:
            for j in range(arr.shape[1]):
                features[f"{name}[{j}]"] = arr[:, j].astype(float)
    return features


def output_summary(outputs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Class counts for integer/label outputs, n/sum/bins for float outputs."""
    summary: dict[str, dict[str, Any]] = {}
    for name, value in outputs.items():
        arr = np.asarray(value)
        if arr.dtype.kind in "biuUSO":
            if arr.dtype.kind == "O" and arr.size and not isinstance(arr.flat[0], str | bytes | int | np.integer):
                continue  # e.g. a sequence of maps (ZipMap probabilities): not summarised
            labels, counts = np.unique(arr.ravel().astype(str), return_counts=True)
            summary[name] = {"kind": "class", "counts": {str(k): int(c) for k, c in zip(labels, counts, strict=True)}}
        elif arr.dtype.kind == "f":
            flat = arr.astype(float).ravel()
            finite = flat[np.isfinite(flat)]
            summary[name] = {
                "kind": "float",
                "n": int(finite.size),
                "sum": float(finite.sum()),
                "bins": {str(k): v for k, v in float_bins(flat).items()},
            }
    return summary


def merge_output_summaries(into: dict[str, dict[str, Any]], other: Mapping[str, Mapping[str, Any]]) -> None:
    """Add `other` to `into` in place (counts, n, sum and bins add up)."""
    for name, part in other.items():
        target = into.setdefault(name, {"kind": part.get("kind", "float")})
        if part.get("kind") == "class":
            counts = target.setdefault("counts", {})
            for label, c in part.get("counts", {}).items():
                counts[label] = counts.get(label, 0) + int(c)
        else:
            target["n"] = target.get("n", 0) + int(part.get("n", 0))
            target["sum"] = target.get("sum", 0.0) + float(part.get("sum", 0.0))
            bins = target.setdefault("bins", {})
            for key, c in part.get("bins", {}).items():
                bins[str(key)] = bins.get(str(key), 0) + int(c)


def reference_statistics(
    features: Mapping[str, np.ndarray],
    *,
    bins: int = REFERENCE_BINS,
    sample_cap: int = REFERENCE_SAMPLE_CAP,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-feature quantile bins and counts plus a capped sample for the KS test, and the
    median and median absolute deviation (robust outlier z-scores)."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for name, values in features.items():
        v = np.asarray(values, dtype=float).ravel()
        v = v[np.isfinite(v)]
        if v.size == 0:
            continue
        edges = quantile_edges(v, bins)
        sample = v if v.size <= sample_cap else rng.choice(v, size=sample_cap, replace=False)
        median = float(np.median(v))
        out[name] = {
            "edges": edges,
            "counts": bin_counts(v, edges),
            "n": int(v.size),
            "mean": float(v.mean()),
            "std": float(v.std()),
            "median": median,
            "mad": float(np.median(np.abs(v - median))),
            "sample": [float(x) for x in sample],
        }
    return out


def summary_distribution(part: Mapping[str, Any]) -> dict[str, int]:
    """The categorical histogram of an output summary (class counts or float bins)."""
    if part.get("kind") == "class":
        return {str(k): int(v) for k, v in part.get("counts", {}).items()}
    return {str(k): int(v) for k, v in part.get("bins", {}).items()}


def categorical_psi(ref: Mapping[str, int], cur: Mapping[str, int]) -> float:
    """PSI between two categorical histograms (the union of their categories)."""
    keys = sorted(set(ref) | set(cur))
    return psi([ref.get(k, 0) for k in keys], [cur.get(k, 0) for k in keys])
