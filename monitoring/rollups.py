"""Monitoring's storage: the flusher's drained counts, roll-ups of Redis minutes into PostgreSQL,
payload samples, compaction and retention, application keys' last use.

Tasks call these; nothing here runs on the prediction path."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from inference.models import ApiKey
from monitoring import keys
from monitoring.models import DriftScore, InputSample, MetricRollup, PayloadSample
from monitoring.stats import merge_output_summaries

ROLLUP_SUMS = (
    "count",
    "rows",
    "error_count",
    "latency_sum_ms",
    "batch_rows_sum",
    "batch_count",
    "queue_ms_sum",
    "model_ms_sum",
    "outputs_skipped",
    "scored_rows",
    "outlier_rows",
    "shadow_compared",
    "shadow_agreed",
)

INPUT_SAMPLE_CAP = 5000  # feature values kept per deployment per minute


def minute_dt(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * 60, tz=UTC)


def rollup_redis() -> Any:
    import redis

    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
    )


def add_rollup(target: dict[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    """Add one roll-up's values to another's (in place), e.g. minutes into an hour."""
    for name in ROLLUP_SUMS:
        target[name] = target.get(name, 0) + (part.get(name) or 0)
    errors = target.setdefault("errors", {})
    for kind, c in (part.get("errors") or {}).items():
        errors[kind] = errors.get(kind, 0) + c
    buckets = list(target.get("latency_buckets") or [0] * keys.N_BUCKETS)
    for i, c in enumerate(part.get("latency_buckets") or []):
        if i < len(buckets):
            buckets[i] += c
    target["latency_buckets"] = buckets
    outputs = target.setdefault("outputs", {})
    merge_output_summaries(outputs, part.get("outputs") or {})
    return target


def _rollup_values(row: MetricRollup) -> dict[str, Any]:
    return {name: getattr(row, name) for name in (*ROLLUP_SUMS, "errors", "latency_buckets", "outputs")}


ROLLUP_FIELDS = [*ROLLUP_SUMS, "errors", "latency_buckets", "outputs", "updated_at"]


# --- storing what the flusher drained ----------------------------------------------------------
@transaction.atomic
def monitoring_store_flush(
    *,
    rollups: list[tuple[tuple[int, str, str, str], dict[str, Any]]],
    inputs: list[tuple[tuple[int, str, str], dict[str, list[float]]]],
    payloads: list[dict[str, Any]],
) -> None:
    """The embedded default (no Redis): one flush, one transaction, counts added to the minutes."""
    for (minute, endpoint, deployment, role), values in rollups:
        row, created = MetricRollup.objects.select_for_update().get_or_create(
            endpoint=endpoint,
            deployment=deployment,
            role=role,
            granularity=MetricRollup.Granularity.MINUTE,
            minute=minute_dt(minute),
            defaults=values,
        )
        if not created:
            for name, value in add_rollup(_rollup_values(row), values).items():
                setattr(row, name, value)
            row.save(update_fields=ROLLUP_FIELDS)
    for (minute, endpoint, deployment), columns in inputs:
        _input_sample_append(endpoint=endpoint, deployment=deployment, minute=minute_dt(minute), columns=columns)
    _payloads_store(payloads)


def _input_sample_append(*, endpoint: str, deployment: str, minute: datetime, columns: dict[str, list[float]]) -> None:
    """Store one flush's sampled rows as a new row, up to INPUT_SAMPLE_CAP rows per minute.

    Appending, not merging: a merge read the minute's whole sample back, decoded and
    re-encoded it on every flush, so a flush late in a minute cost 240-260 ms of CPU in
    the serving process with the GIL held (256-feature model, `bench/flush_cost.py`), which
    showed up as the p99 tail of every request in flight (docs/benchmarks.md).
    """
    stored = (
        InputSample.objects.filter(endpoint=endpoint, deployment=deployment, minute=minute).aggregate(n=Sum("rows"))[
            "n"
        ]
        or 0
    )
    room = INPUT_SAMPLE_CAP - stored
    if room <= 0:
        return
    features = {k: v[:room] for k, v in columns.items()}
    InputSample.objects.create(
        endpoint=endpoint, deployment=deployment, minute=minute, features=features, rows=_rows(features)
    )


def _rows(columns: Mapping[str, list[float]]) -> int:
    return max((len(v) for v in columns.values()), default=0)


def _payloads_store(payloads: Iterable[dict[str, Any]]) -> int:
    rows = [
        PayloadSample(
            sample_id=p["id"],
            endpoint=p["endpoint"],
            deployment=p["deployment"],
            role=p["role"],
            ok=p["ok"],
            latency_ms=p["latency_ms"],
            request=p["request"],
            response=p["response"],
            truncated=p["truncated"],
            at=datetime.fromtimestamp(p["at"], tz=UTC),
        )
        for p in payloads
    ]
    PayloadSample.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def api_keys_last_used_store(uses: Mapping[str, float]) -> int:
    """Set application keys' `last_used_at` (the flusher calls this; never per request).

    `uses` maps key prefixes to unix times; a later time already stored is kept."""
    from django.db.models import Q

    updated = 0
    with transaction.atomic():
        for prefix, at in sorted(uses.items()):
            when = datetime.fromtimestamp(at, tz=UTC)
            updated += (
                ApiKey.objects.filter(prefix=prefix)
                .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=when))
                .update(last_used_at=when)
            )
    return updated


# --- beat: Redis minutes into PostgreSQL ----------------------------------------------------------
def rollup_minutes(*, now: datetime | None = None) -> int:
    """Copy closed minutes from Redis into MetricRollup (replacing, so a rerun is harmless).

    A minute is closed once it ended MONITORING_ROLLUP_GRACE_S ago (every process has
    flushed it by then). Keys are deleted only after the transaction committed.
    """
    if not settings.REDIS_URL:
        return 0
    now = now or timezone.now()
    last_closed = int((now.timestamp() - settings.MONITORING_ROLLUP_GRACE_S) // 60) - 1
    client = rollup_redis()
    names = [k.decode() for k in client.zrangebyscore(keys.MINUTES_INDEX, "-inf", last_closed)]
    input_names = [k.decode() for k in client.zrangebyscore(keys.INPUTS_INDEX, "-inf", last_closed)]
    if not names and not input_names:
        return 0
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(name)
    for name in input_names:
        pipe.lrange(name, 0, -1)
    results = pipe.execute()
    hashes, lists = results[: len(names)], results[len(names) :]
    with transaction.atomic():
        for name, raw in zip(names, hashes, strict=True):
            if not raw:
                continue  # expired before it was rolled up
            minute, endpoint, deployment, role = keys.parse_minute_key(name)
            MetricRollup.objects.update_or_create(
                endpoint=endpoint,
                deployment=deployment,
                role=role,
                granularity=MetricRollup.Granularity.MINUTE,
                minute=minute_dt(minute),
                defaults=keys.decode_hash(raw),
            )
        for name, items in zip(input_names, lists, strict=True):
            minute, endpoint, deployment = keys.parse_inputs_key(name)
            columns: dict[str, list[float]] = {}
            for item in items:
                for feature, values in json.loads(item).items():
                    columns.setdefault(feature, []).extend(values)
            if columns:
                # Replacing the minute's rows, so a rerun is harmless.
                InputSample.objects.filter(endpoint=endpoint, deployment=deployment, minute=minute_dt(minute)).delete()
                features = {k: v[:INPUT_SAMPLE_CAP] for k, v in columns.items()}
                InputSample.objects.create(
                    endpoint=endpoint,
                    deployment=deployment,
                    minute=minute_dt(minute),
                    features=features,
                    rows=_rows(features),
                )
    pipe = client.pipeline(transaction=False)
    for name in names + input_names:
        pipe.delete(name)
    if names:
        pipe.zrem(keys.MINUTES_INDEX, *names)
    if input_names:
        pipe.zrem(keys.INPUTS_INDEX, *input_names)
    pipe.execute()
    return len(names)


def persist_samples() -> int:
    """Move payload samples from the capped Redis lists into PayloadSample (deduplicated by id)."""
    if not settings.REDIS_URL:
        return 0
    client = rollup_redis()
    stored = 0
    for raw_endpoint in client.smembers(keys.SAMPLES_INDEX):
        key = keys.samples_key(raw_endpoint.decode())
        items = client.lrange(key, 0, -1)
        if not items:
            continue
        stored += _payloads_store(json.loads(item) for item in items)
        # The oldest items are at the tail; newer ones may have been pushed at the head.
        client.ltrim(key, 0, -len(items) - 1)
    return stored


# --- retention and compaction -------------------------------------------------------------------
def compact_rollups(*, now: datetime | None = None) -> dict[str, int]:
    """Fold minutes older than the minute retention into hour rows; delete what is too old.

    Minute rows are folded and deleted in the same transaction per hour, so an hour is
    never counted twice and a rerun finds nothing left to fold.
    """
    now = now or timezone.now()
    cutoff = (now - timedelta(days=settings.MONITORING_MINUTE_RETENTION_DAYS)).replace(
        minute=0, second=0, microsecond=0
    )
    old = MetricRollup.objects.filter(granularity=MetricRollup.Granularity.MINUTE, minute__lt=cutoff)
    hours = sorted({m.replace(minute=0, second=0, microsecond=0) for m in old.values_list("minute", flat=True)})
    folded = 0
    for hour in hours:
        with transaction.atomic():
            minutes = list(
                MetricRollup.objects.select_for_update().filter(
                    granularity=MetricRollup.Granularity.MINUTE, minute__gte=hour, minute__lt=hour + timedelta(hours=1)
                )
            )
            groups: dict[tuple[str, str, str], dict[str, Any]] = {}
            for row in minutes:
                add_rollup(groups.setdefault((row.endpoint, row.deployment, row.role), {}), _rollup_values(row))
            for (endpoint, deployment, role), values in groups.items():
                row, created = MetricRollup.objects.select_for_update().get_or_create(
                    endpoint=endpoint,
                    deployment=deployment,
                    role=role,
                    granularity=MetricRollup.Granularity.HOUR,
                    minute=hour,
                    defaults=values,
                )
                if not created:
                    for name, value in add_rollup(_rollup_values(row), values).items():
                        setattr(row, name, value)
                    row.save(update_fields=ROLLUP_FIELDS)
            MetricRollup.objects.filter(pk__in=[r.pk for r in minutes]).delete()
            folded += len(minutes)
    hour_cutoff = now - timedelta(days=settings.MONITORING_HOUR_RETENTION_DAYS)
    deleted_hours, _ = MetricRollup.objects.filter(
        granularity=MetricRollup.Granularity.HOUR, minute__lt=hour_cutoff
    ).delete()
    deleted_inputs, _ = InputSample.objects.filter(minute__lt=cutoff).delete()
    deleted_drift, _ = DriftScore.objects.filter(window_end__lt=hour_cutoff).delete()
    sample_cutoff = now - timedelta(days=settings.MONITORING_SAMPLE_RETENTION_DAYS)
    deleted_samples, _ = PayloadSample.objects.filter(at__lt=sample_cutoff).delete()
    return {
        "folded_minutes": folded,
        "deleted_hours": deleted_hours,
        "deleted_inputs": deleted_inputs,
        "deleted_drift": deleted_drift,
        "deleted_samples": deleted_samples,
    }
