"""Pure functions: latency percentiles, PSI and the two-sample KS test against known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inference.telemetry.recorder import LATENCY_BUCKETS_MS
from monitoring.stats import (
    bin_counts,
    float_bin,
    float_bin_lower,
    float_bins,
    ks_two_sample,
    latency_percentiles,
    psi,
    quantile_edges,
    reference_statistics,
)


def buckets_with(**counts_by_edge: int) -> list[int]:
    out = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    for key, count in counts_by_edge.items():
        out[LATENCY_BUCKETS_MS.index(float(key.removeprefix("le")))] = count
    return out


def test_percentiles_interpolate_inside_the_bucket() -> None:
    # Ten observations in (5, 10] ms: the median sits half-way through that bucket.
    result = latency_percentiles(buckets_with(le10=10))
    assert result == {"p50": 7.5, "p95": 9.75, "p99": 9.95}


def test_percentiles_pick_the_bucket_that_holds_the_rank() -> None:
    # 90 fast (<= 1 ms: (0.5, 1]) and 10 slow ((100, 200] ms).
    result = latency_percentiles(buckets_with(le1=90, le200=10))
    assert result["p50"] == pytest.approx(0.5 + 0.5 * 50 / 90, abs=1e-4)
    assert result["p95"] == pytest.approx(150.0)
    assert result["p99"] == pytest.approx(190.0)


def test_percentiles_of_nothing_are_none_and_overflow_answers_the_last_edge() -> None:
    assert latency_percentiles([0] * 15) == {"p50": None, "p95": None, "p99": None}
    over = [0] * 14 + [3]
    assert latency_percentiles(over)["p99"] == LATENCY_BUCKETS_MS[-1]


def test_psi_is_zero_for_identical_distributions_and_known_for_a_shift() -> None:
    assert psi([50, 50], [5, 5]) == pytest.approx(0.0)
    expected = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert psi([50, 50], [90, 10]) == pytest.approx(expected)  # 0.8789
    # An empty bin is floored, not infinite.
    assert math.isfinite(psi([100, 0], [0, 100]))


def test_psi_refuses_mismatched_or_empty_histograms() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least one"):
        psi([0, 0], [1, 1])


def test_ks_statistic_and_p_value_match_known_values() -> None:
    # Disjoint samples: D = 1. Identical samples: D = 0, p = 1.
    d, p = ks_two_sample([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    assert d == 1.0 and p < 0.01
    d, p = ks_two_sample([1, 2, 3], [1, 2, 3])
    assert d == 0.0 and p == 1.0
    # Hand-computed: a=[1,2,3,4], b=[3,4,5,6] -> D = 0.5.
    assert ks_two_sample([1, 2, 3, 4], [3, 4, 5, 6])[0] == pytest.approx(0.5)


def test_ks_agrees_with_scipy_on_random_samples() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    for shift in (0.0, 0.1, 0.5):
        a, b = rng.normal(0, 1, 400), rng.normal(shift, 1, 300)
        d, p = ks_two_sample(a, b)
        expected = stats.ks_2samp(a, b, method="asymp")
        assert d == pytest.approx(expected.statistic, abs=1e-12)
        assert p == pytest.approx(expected.pvalue, abs=0.02)


def test_ks_refuses_empty_samples() -> None:
    with pytest.raises(ValueError):
        ks_two_sample([], [1.0])
    with pytest.raises(ValueError):
        ks_two_sample([float("nan")], [1.0])


def test_reference_bins_hold_equal_shares_and_count_new_values_consistently() -> None:
    values = np.arange(1000, dtype=float)
    edges = quantile_edges(values, 10)
    assert len(edges) == 9
    counts = bin_counts(values, edges)
    assert sum(counts) == 1000 and max(counts) - min(counts) <= 2
    stats = reference_statistics({"x": values}, sample_cap=100)
    assert stats["x"]["n"] == 1000 and len(stats["x"]["sample"]) == 100


def test_float_bins_are_signed_quarter_decades() -> None:
    assert float_bin(0.0) == 0
    assert float_bin(1.0) == 37 and float_bin(-1.0) == -37
    assert float_bin_lower(37) == 1.0
    assert float_bins(np.array([1.0, 1.1, -1.0, 0.0])) == {37: 2, -37: 1, 0: 1}
