"""Outlier scores of request rows against a version's reference statistics. Pure numpy.

Two scores per row:
- the **robust z-score** of each feature, (x - median) / (1.4826 * MAD) of the reference
  (the standard deviation when the MAD is 0); the row's score is the largest |z| and the
  feature that has it;
- the **Mahalanobis distance** sqrt((x - mean)^T S^-1 (x - mean)) on the reference
  covariance S (pseudo-inverse, so a singular S still scores).

A row is an outlier when its distance exceeds the chi-square 99.9 % quantile for d
features (what a row of the reference's own distribution, were it Gaussian, exceeds one
time in a thousand) or its largest |z| exceeds Z_THRESHOLD. Built once per deployment
when the routing table is built; scoring costs a few vectorised numpy operations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Z_THRESHOLD = 5.0
QUANTILE_Z = 3.090232  # the standard normal's 99.9 % quantile
MAD_TO_SIGMA = 1.4826


def chi2_quantile(d: int, z: float = QUANTILE_Z) -> float:
    """The chi-square quantile for d degrees of freedom at the normal quantile z
    (Wilson-Hilferty; within 1 % of the exact value from d = 1 up)."""
    k = 2.0 / (9.0 * d)
    return d * (1.0 - k + z * math.sqrt(k)) ** 3


@dataclass(frozen=True)
class Scores:
    distance: np.ndarray  # (n,) Mahalanobis distance
    max_z: np.ndarray  # (n,) the largest |robust z| of the row
    worst: np.ndarray  # (n,) index of the feature with that z
    outlier: np.ndarray  # (n,) bool

    def rows(self, names: Sequence[str]) -> list[dict[str, Any]]:
        return [
            {
                "mahalanobis": round(float(d), 4),
                "max_abs_z": round(float(z), 4),
                "feature": names[int(w)],
                "outlier": bool(o),
            }
            for d, z, w, o in zip(self.distance, self.max_z, self.worst, self.outlier, strict=True)
        ]


@dataclass(frozen=True)
class OutlierScorer:
    columns: tuple[tuple[str, int], ...]  # (input, width) in feature order; width 0: a 1-D input
    names: tuple[str, ...]
    median: np.ndarray
    scale: np.ndarray
    mean: np.ndarray
    precision: np.ndarray
    distance_threshold: float
    z_threshold: float = Z_THRESHOLD

    def matrix(self, inputs: Mapping[str, Any]) -> np.ndarray:
        if len(self.columns) == 1:
            name, width = self.columns[0]
            return np.asarray(inputs[name], dtype=float).reshape(-1, max(width, 1))
        return np.hstack([np.asarray(inputs[n], dtype=float).reshape(-1, max(w, 1)) for n, w in self.columns])

    def matrix_of(self, batch: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The rows of many requests as one matrix (one concatenation per input)."""
        parts = [
            np.concatenate([np.asarray(inputs[name]) for inputs in batch]).astype(float).reshape(-1, max(width, 1))
            for name, width in self.columns
        ]
        return parts[0] if len(parts) == 1 else np.hstack(parts)

    def score(self, inputs: Mapping[str, Any]) -> Scores:
        return self.score_matrix(self.matrix(inputs))

    def score_matrix(self, x: np.ndarray) -> Scores:
        z = np.abs(x - self.median) / self.scale
        worst = z.argmax(axis=1)
        max_z = z[np.arange(z.shape[0]), worst]
        distance = np.sqrt(self._squared_distance(x))
        outlier = (distance > self.distance_threshold) | (max_z > self.z_threshold)
        return Scores(distance, max_z, worst, outlier)

    def outliers(self, x: np.ndarray) -> np.ndarray:
        """Only the verdicts (what the counts need): fewer operations than score_matrix."""
        far: np.ndarray = self._squared_distance(x) > self.distance_threshold**2
        wide: np.ndarray = (np.abs(x - self.median) > self.z_threshold * self.scale).any(axis=1)
        either: np.ndarray = np.logical_or(far, wide)
        return either

    def _squared_distance(self, x: np.ndarray) -> np.ndarray:
        centred = x - self.mean
        squared: np.ndarray = np.maximum(((centred @ self.precision) * centred).sum(axis=1), 0.0)
        return squared


def feature_columns(inputs: Sequence[Any]) -> list[tuple[str, int, list[str]]]:
    """(input, width, feature names) of each numeric input of rank 1 or 2, named as
    monitoring names them (monitoring.stats.tensor_features): `x` or `x[0]`, `x[1]`, ..."""
    out = []
    for spec in inputs:
        shape = tuple(spec.shape)
        if spec.datatype in ("BYTES", "BOOL", "BF16") or len(shape) not in (1, 2):
            continue
        if len(shape) == 1:
            out.append((spec.name, 0, [spec.name]))
        elif shape[1] == 1:
            out.append((spec.name, 1, [spec.name]))
        elif 1 < shape[1] <= 256:
            out.append((spec.name, shape[1], [f"{spec.name}[{j}]" for j in range(shape[1])]))
    return out


def covariance(columns: Mapping[str, np.ndarray]) -> dict[str, Any] | None:
    """The reference covariance of aligned columns (same length: the same rows), for storing."""
    names = list(columns)
    if not names:
        return None
    lengths = {len(columns[n]) for n in names}
    if len(lengths) != 1 or lengths.pop() < 2:
        return None
    matrix = np.column_stack([np.asarray(columns[n], dtype=float) for n in names])
    matrix = matrix[np.isfinite(matrix).all(axis=1)]
    if matrix.shape[0] < 2:
        return None
    cov = np.atleast_2d(np.cov(matrix, rowvar=False))
    return {
        "features": names,
        "n": int(matrix.shape[0]),
        "mean": [float(v) for v in matrix.mean(axis=0)],
        "matrix": [[float(v) for v in row] for row in cov],
    }


def _robust(feature: Mapping[str, Any]) -> tuple[float, float]:
    sample = np.asarray(feature.get("sample") or [], dtype=float)
    median = feature.get("median")
    mad = feature.get("mad")
    if (median is None or mad is None) and sample.size:
        median = float(np.median(sample))
        mad = float(np.median(np.abs(sample - median)))
    median = float(median if median is not None else feature.get("mean", 0.0))
    scale = MAD_TO_SIGMA * float(mad or 0.0) or float(feature.get("std") or 0.0) or 1e-9
    return median, scale


def scorer_from_reference(reference: Mapping[str, Any] | None, inputs: Sequence[Any]) -> OutlierScorer | None:
    """A scorer for a signature's inputs from reference statistics, None when they do not
    describe every feature (or there are none). The covariance is the stored one when it
    names the same features, else it is computed from the per-feature samples when those
    are whole columns (the reference had at most 2,000 rows), else the diagonal."""
    features = (reference or {}).get("features") or {}
    columns = feature_columns(inputs)
    names = [n for _, _, group in columns for n in group]
    if not names or any(n not in features for n in names):
        return None
    robust = [_robust(features[n]) for n in names]
    stored = (reference or {}).get("covariance") or {}
    if stored.get("features") == names:
        mean = np.asarray(stored["mean"], dtype=float)
        cov = np.asarray(stored["matrix"], dtype=float)
    else:
        aligned = all(len(features[n].get("sample") or []) == features[n].get("n") for n in names)
        computed = covariance({n: np.asarray(features[n]["sample"], dtype=float) for n in names}) if aligned else None
        if computed is not None:
            mean, cov = np.asarray(computed["mean"]), np.asarray(computed["matrix"])
        else:
            mean = np.array([float(features[n].get("mean", 0.0)) for n in names])
            cov = np.diag([float(features[n].get("std") or 1.0) ** 2 for n in names])
    return OutlierScorer(
        columns=tuple((name, width) for name, width, _ in columns),
        names=tuple(names),
        median=np.array([m for m, _ in robust]),
        scale=np.array([s for _, s in robust]),
        mean=mean,
        precision=np.linalg.pinv(cov),
        distance_threshold=math.sqrt(chi2_quantile(len(names))),
    )
