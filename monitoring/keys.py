"""Redis key names and the hash layout shared by the flusher, the roll-up and /metrics.

Per-minute hashes `mh:m:<minute>:<endpoint>|<deployment>|<role>` (minute = unix time // 60)
expire after MONITORING_KEY_TTL_S; the sorted set `mh:minutes` indexes them by minute.
Totals since the start of time for Prometheus are in `mh:tot:<endpoint>|<deployment>|<role>`
(set `mh:tot:index`); they never expire. Input samples for drift are lists
`mh:in:<minute>:<endpoint>|<deployment>` (index `mh:inputs`), payload samples the capped
lists `mh:samples:<endpoint>` (index set `mh:samples:index`). `mh:dropped` counts records
lost because Redis could not be written.
"""

from __future__ import annotations

import json
from typing import Any

from inference.telemetry.recorder import LATENCY_BUCKETS_MS, MinuteStats
from monitoring.stats import merge_output_summaries, output_summary

PREFIX = "mh:"
MINUTES_INDEX = "mh:minutes"
INPUTS_INDEX = "mh:inputs"
TOTALS_INDEX = "mh:tot:index"
SAMPLES_INDEX = "mh:samples:index"
DROPPED = "mh:dropped"
# Written by the serving side (see docs/monitoring.md); read by /metrics when present.

N_BUCKETS = len(LATENCY_BUCKETS_MS) + 1
FLOAT_FIELDS = {"lat_sum_ms", "queue_ms_sum", "model_ms_sum"}
INT_FIELDS = frozenset(
    {
        "count",
        "rows",
        "batch_rows_sum",
        "batch_count",
        "outputs_skipped",
        "scored_rows",
        "outlier_rows",
        "shadow_compared",
        "shadow_agreed",
    }
)


def series(endpoint: str, deployment: str, role: str) -> str:
    return f"{endpoint}|{deployment}|{role}"


def split_series(name: str) -> tuple[str, str, str]:
    endpoint, deployment, role = name.split("|", 2)
    return endpoint, deployment, role


def minute_key(minute: int, endpoint: str, deployment: str, role: str) -> str:
    return f"mh:m:{minute}:{series(endpoint, deployment, role)}"


def parse_minute_key(key: str) -> tuple[int, str, str, str]:
    _, _, minute, rest = key.split(":", 3)
    return (int(minute), *split_series(rest))


def totals_key(endpoint: str, deployment: str, role: str) -> str:
    return f"mh:tot:{series(endpoint, deployment, role)}"


def inputs_key(minute: int, endpoint: str, deployment: str) -> str:
    return f"mh:in:{minute}:{endpoint}|{deployment}"


def parse_inputs_key(key: str) -> tuple[int, str, str]:
    _, _, minute, rest = key.split(":", 3)
    endpoint, deployment = rest.split("|", 1)
    return int(minute), endpoint, deployment


def samples_key(endpoint: str) -> str:
    return f"mh:samples:{endpoint}"


def _output_field(name: str, *parts: str) -> str:
    return "o" + json.dumps([name, *parts], separators=(",", ":"))


def encode_stats(stats: MinuteStats) -> tuple[dict[str, int], dict[str, float]]:
    """The hash increments for one MinuteStats: integer fields and float fields."""
    ints: dict[str, int] = {"count": stats.count, "rows": stats.rows}
    floats: dict[str, float] = {}
    for i, c in enumerate(stats.latency_buckets):
        if c:
            ints[f"b{i}"] = c
    for kind, c in stats.errors.items():
        ints[f"e|{kind}"] = c
    if stats.batch_count:
        ints["batch_rows_sum"] = stats.batch_rows_sum
        ints["batch_count"] = stats.batch_count
    if stats.outputs_skipped:
        ints["outputs_skipped"] = stats.outputs_skipped
    scored, outliers = outlier_counts(stats)
    if scored:
        ints["scored_rows"] = scored
        ints["outlier_rows"] = outliers
    if stats.shadow_compared:
        ints["shadow_compared"] = stats.shadow_compared
        ints["shadow_agreed"] = stats.shadow_agreed
    floats["lat_sum_ms"] = stats.latency_sum_ms
    if stats.queue_ms_sum:
        floats["queue_ms_sum"] = stats.queue_ms_sum
    if stats.model_ms_sum:
        floats["model_ms_sum"] = stats.model_ms_sum
    for name, part in summarise_outputs(stats).items():
        if part["kind"] == "class":
            for label, c in part["counts"].items():
                ints[_output_field(name, "c", label)] = c
        else:
            ints[_output_field(name, "n")] = part["n"]
            floats[_output_field(name, "sum")] = part["sum"]
            for b, c in part["bins"].items():
                ints[_output_field(name, "b", str(b))] = c
    return ints, floats


def outlier_counts(stats: MinuteStats) -> tuple[int, int]:
    """Scored rows and outliers of a MinuteStats: those scored on the request, plus the
    kept inputs scored here, all the rows of one scorer in one call (off the request)."""
    scored, outliers = stats.scored_rows, stats.outlier_rows
    if not stats.to_score:
        return scored, outliers
    first = stats.to_score[0][0]
    if all(scorer is first for scorer, _ in stats.to_score):  # the usual case: one deployment, one scorer
        groups = {id(first): (first, [inputs for _, inputs in stats.to_score])}
    else:
        groups = {}
        for scorer, inputs in stats.to_score:
            groups.setdefault(id(scorer), (scorer, []))[1].append(inputs)
    for scorer, batch in groups.values():
        try:
            flags = scorer.outliers(scorer.matrix_of(batch))
        except Exception:  # noqa: BLE001,S112 - inputs that do not fit the scorer are not scored
            continue
        scored += int(flags.shape[0])
        outliers += int(flags.sum())
    return scored, outliers


def summarise_outputs(stats: MinuteStats) -> dict[str, dict[str, Any]]:
    """One output summary for all the output tensors kept in a MinuteStats."""
    if not stats.outputs:
        return {}
    import numpy as np

    by_name: dict[str, list[Any]] = {}
    for outputs in stats.outputs:
        for name, value in outputs.items():
            by_name.setdefault(name, []).append(np.asarray(value).reshape(-1))
    summary: dict[str, dict[str, Any]] = {}
    for name, parts in by_name.items():
        try:
            merged = np.concatenate(parts)
        except ValueError:
            continue
        merge_output_summaries(summary, output_summary({name: merged}))
    return summary


def empty_rollup() -> dict[str, Any]:
    return {
        "count": 0,
        "rows": 0,
        "error_count": 0,
        "errors": {},
        "latency_buckets": [0] * N_BUCKETS,
        "latency_sum_ms": 0.0,
        "batch_rows_sum": 0,
        "batch_count": 0,
        "queue_ms_sum": 0.0,
        "model_ms_sum": 0.0,
        "outputs": {},
        "outputs_skipped": 0,
        "scored_rows": 0,
        "outlier_rows": 0,
        "shadow_compared": 0,
        "shadow_agreed": 0,
    }


def decode_hash(raw: dict[Any, Any]) -> dict[str, Any]:
    """A minute (or totals) hash back into roll-up field values."""
    out = empty_rollup()
    for k, v in raw.items():
        key = k.decode() if isinstance(k, bytes) else str(k)
        text = v.decode() if isinstance(v, bytes) else str(v)
        if key in INT_FIELDS:
            out[key] += int(text)
        elif key == "lat_sum_ms":
            out["latency_sum_ms"] += float(text)
        elif key in ("queue_ms_sum", "model_ms_sum"):
            out[key] += float(text)
        elif key.startswith("b") and key[1:].isdigit():
            i = int(key[1:])
            if i < N_BUCKETS:
                out["latency_buckets"][i] += int(text)
        elif key.startswith("e|"):
            out["errors"][key[2:]] = out["errors"].get(key[2:], 0) + int(text)
        elif key.startswith("o["):
            try:
                name, part, *rest = json.loads(key[1:])
            except (ValueError, TypeError):
                continue
            if part == "c":
                target = out["outputs"].setdefault(name, {"kind": "class", "counts": {}})
                target.setdefault("counts", {})[rest[0]] = int(text)
            else:
                target = out["outputs"].setdefault(name, {"kind": "float", "n": 0, "sum": 0.0, "bins": {}})
                if part == "n":
                    target["n"] = int(text)
                elif part == "sum":
                    target["sum"] = float(text)
                elif part == "b":
                    target.setdefault("bins", {})[rest[0]] = int(text)
    out["error_count"] = sum(out["errors"].values())
    return out


def stats_to_rollup(stats: MinuteStats) -> dict[str, Any]:
    """A MinuteStats as roll-up field values (the embedded path, without Redis)."""
    ints, floats = encode_stats(stats)
    raw: dict[str, Any] = {**{k: str(v) for k, v in ints.items()}, **{k: repr(v) for k, v in floats.items()}}
    return decode_hash(raw)
