"""Monitoring's rules: roll-ups, retention, samples, reference statistics, drift and alerts.

Tasks and views call these; nothing here runs on the prediction path.
"""

from __future__ import annotations

import json
import logging
import math
import operator
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from config.errors import DomainError, NotFound
from monitoring import keys
from monitoring.models import (
    AlertEvent,
    AlertRule,
    DriftScore,
    InputSample,
    MetricRollup,
    MonitoringSettings,
    PayloadSample,
    SchedulerHeartbeat,
)
from monitoring.stats import (
    bin_counts,
    categorical_psi,
    ks_two_sample,
    merge_output_summaries,
    psi,
    reference_statistics,
    summary_distribution,
)
from registry.audit import audit_record

log = logging.getLogger(__name__)

User = AbstractBaseUser | AnonymousUser | None
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
    "shadow_compared",
    "shadow_agreed",
)
INPUT_SAMPLE_CAP = 5000  # feature values kept per deployment per minute
DRIFT_MIN_VALUES = 20


def _minute_dt(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * 60, tz=UTC)


def _redis() -> Any:
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
            minute=_minute_dt(minute),
            defaults=values,
        )
        if not created:
            for name, value in add_rollup(_rollup_values(row), values).items():
                setattr(row, name, value)
            row.save(update_fields=ROLLUP_FIELDS)
    for (minute, endpoint, deployment), columns in inputs:
        _input_sample_append(endpoint=endpoint, deployment=deployment, minute=_minute_dt(minute), columns=columns)
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

    from inference.models import ApiKey

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


SCHEDULER_HEARTBEAT = "scheduler"


def scheduler_heartbeat(*, now: datetime | None = None) -> datetime:
    """Record that the periodic jobs are running (the `monitoring.scheduler_heartbeat` job)."""
    import os
    import socket

    now = now or timezone.now()
    SchedulerHeartbeat.objects.update_or_create(
        name=SCHEDULER_HEARTBEAT, defaults={"last_run_at": now, "runner": f"{socket.gethostname()}:{os.getpid()}"}
    )
    return now


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
    client = _redis()
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
                minute=_minute_dt(minute),
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
                InputSample.objects.filter(endpoint=endpoint, deployment=deployment, minute=_minute_dt(minute)).delete()
                features = {k: v[:INPUT_SAMPLE_CAP] for k, v in columns.items()}
                InputSample.objects.create(
                    endpoint=endpoint,
                    deployment=deployment,
                    minute=_minute_dt(minute),
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
    client = _redis()
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


# --- monitoring settings ---------------------------------------------------------------------------
def _rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
        raise DomainError(f"{name} must be a number from 0 to 1, got {value!r}", details={"field": name})
    return float(value)


@transaction.atomic
def monitoring_settings_update(
    *, endpoint_name: str, changes: Mapping[str, Any], user: User, source_ip: str | None = None
) -> MonitoringSettings:
    from inference.models import Endpoint

    endpoint = Endpoint.objects.filter(name=endpoint_name).first()
    if endpoint is None:
        raise NotFound(f"no endpoint named {endpoint_name!r}")
    row, _ = MonitoringSettings.objects.select_for_update().get_or_create(endpoint=endpoint)
    before = monitoring_settings_dict(row)
    allowed = {"payload_sample_rate", "drift_sample_rate", "max_payload_bytes", "redact_fields"}
    unknown = set(changes) - allowed
    if unknown:
        raise DomainError(f"unknown settings: {', '.join(sorted(unknown))}; known: {', '.join(sorted(allowed))}")
    for name in ("payload_sample_rate", "drift_sample_rate"):
        if name in changes:
            setattr(row, name, _rate(name, changes[name]))
    if "max_payload_bytes" in changes:
        value = changes["max_payload_bytes"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 1024 * 1024:
            raise DomainError(f"max_payload_bytes must be an integer from 1 to 1048576, got {value!r}")
        row.max_payload_bytes = value
    if "redact_fields" in changes:
        value = changes["redact_fields"]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise DomainError("redact_fields must be a list of field names")
        row.redact_fields = value
    row.save()
    audit_record(
        actor=user,
        action="monitoring_settings.update",
        obj=row,
        before=before,
        after=monitoring_settings_dict(row),
        source_ip=source_ip,
    )
    return row


def monitoring_settings_dict(row: MonitoringSettings) -> dict[str, Any]:
    return {
        "endpoint": row.endpoint.name,
        "payload_sample_rate": row.payload_sample_rate,
        "drift_sample_rate": row.drift_sample_rate,
        "max_payload_bytes": row.max_payload_bytes,
        "redact_fields": list(row.redact_fields or []),
    }


# --- reference statistics ----------------------------------------------------------------------------
def _version_for(deployment: str) -> Any:
    from registry.models import ModelVersion

    model, _, version = deployment.rpartition(":")
    if not model or not version.isdigit():
        return None
    return ModelVersion.objects.filter(model__name=model, version=int(version)).first()


@transaction.atomic
def reference_stats_set(
    *,
    model: str,
    version: int,
    features: Mapping[str, np.ndarray],
    outputs: Mapping[str, dict[str, Any]] | None = None,
    source: str,
    user: User,
    source_ip: str | None = None,
) -> dict[str, Any]:
    """Store a version's reference statistics (quantile bins, counts, a capped sample)."""
    from registry.models import ModelVersion

    row = ModelVersion.objects.select_for_update().filter(model__name=model, version=version).first()
    if row is None:
        raise NotFound(f"no version {version} of model {model!r}")
    stats = reference_statistics(features)
    if not stats:
        raise DomainError("the reference data has no numeric values")
    rows = max(int(v["n"]) for v in stats.values())
    reference = {
        "source": source,
        "computed_at": timezone.now().isoformat(),
        "rows": rows,
        "features": stats,
        "outputs": dict(outputs or {}),
    }
    before = {"reference_stats": _reference_brief(row.reference_stats)}
    row.reference_stats = reference
    row.save(update_fields=["reference_stats"])
    audit_record(
        actor=user,
        action="model_version.reference_set",
        obj=row,
        before=before,
        after={"reference_stats": _reference_brief(reference)},
        source_ip=source_ip,
    )
    return reference


def _reference_brief(reference: Mapping[str, Any] | None) -> dict[str, Any]:
    if not reference:
        return {}
    return {
        "source": reference.get("source"),
        "rows": reference.get("rows"),
        "features": sorted((reference.get("features") or {}).keys()),
    }


def reference_from_traffic(*, now: datetime | None = None) -> int:
    """Give versions without reference statistics one from their first N hours of traffic."""
    now = now or timezone.now()
    hours = settings.MONITORING_REFERENCE_FROM_TRAFFIC_HOURS
    done = 0
    for deployment in InputSample.objects.values_list("deployment", flat=True).distinct():
        version = _version_for(deployment)
        if version is None or version.reference_stats:
            continue
        first = InputSample.objects.filter(deployment=deployment).order_by("minute").values_list("minute", flat=True)[0]
        if first + timedelta(hours=hours) > now:
            continue
        end = first + timedelta(hours=hours)
        columns: dict[str, list[float]] = defaultdict(list)
        for features in InputSample.objects.filter(deployment=deployment, minute__lt=end).values_list(
            "features", flat=True
        ):
            for name, values in features.items():
                columns[name].extend(values)
        if not columns:
            continue
        outputs: dict[str, dict[str, Any]] = {}
        for part in MetricRollup.objects.filter(deployment=deployment, minute__lt=end).values_list(
            "outputs", flat=True
        ):
            merge_output_summaries(outputs, part or {})
        reference_stats_set(
            model=version.model.name,
            version=version.version,
            features={k: np.asarray(v, dtype=float) for k, v in columns.items()},
            outputs=outputs,
            source="traffic",
            user=None,
        )
        done += 1
    return done


# --- drift -------------------------------------------------------------------------------------------
def drift_compute(*, now: datetime | None = None, window_minutes: int | None = None) -> int:
    """Per-feature PSI and KS of recent inputs (and PSI of outputs) against each version's reference."""
    now = now or timezone.now()
    window = window_minutes or settings.MONITORING_DRIFT_WINDOW_MINUTES
    end = now.replace(second=0, microsecond=0)
    start = end - timedelta(minutes=window)
    columns: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for endpoint, deployment, features in InputSample.objects.filter(minute__gte=start, minute__lt=end).values_list(
        "endpoint", "deployment", "features"
    ):
        for name, values in features.items():
            columns[(endpoint, deployment)][name].extend(values)
    outputs: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for endpoint, deployment, part in (
        MetricRollup.objects.filter(granularity=MetricRollup.Granularity.MINUTE, minute__gte=start, minute__lt=end)
        .exclude(outputs={})
        .values_list("endpoint", "deployment", "outputs")
    ):
        merge_output_summaries(outputs[(endpoint, deployment)], part or {})
    written = 0
    for pair in set(columns) | set(outputs):
        endpoint, deployment = pair
        version = _version_for(deployment)
        reference = (version.reference_stats if version is not None else None) or {}
        if not reference:
            continue
        scores: dict[str, dict[str, Any]] = {}
        for name, values in columns.get(pair, {}).items():
            ref = (reference.get("features") or {}).get(name)
            if ref is None or len(values) < DRIFT_MIN_VALUES:
                continue
            current = np.asarray(values, dtype=float)
            score = psi(ref["counts"], bin_counts(current, ref["edges"]))
            d, p = ks_two_sample(ref["sample"], current) if ref.get("sample") else (None, None)
            DriftScore.objects.update_or_create(
                endpoint=endpoint,
                deployment=deployment,
                kind=DriftScore.Kind.INPUT,
                feature=name,
                window_end=end,
                defaults={"window_minutes": window, "psi": score, "ks_statistic": d, "ks_p_value": p, "n": len(values)},
            )
            scores[name] = {"psi": round(score, 6), "ks": d, "p_value": p, "n": len(values)}
            written += 1
        for name, part in outputs.get(pair, {}).items():
            ref_part = (reference.get("outputs") or {}).get(name)
            cur = summary_distribution(part)
            if not ref_part or sum(cur.values()) < DRIFT_MIN_VALUES:
                continue
            score = categorical_psi(summary_distribution(ref_part), cur)
            DriftScore.objects.update_or_create(
                endpoint=endpoint,
                deployment=deployment,
                kind=DriftScore.Kind.OUTPUT,
                feature=name,
                window_end=end,
                defaults={"window_minutes": window, "psi": score, "n": sum(cur.values())},
            )
            scores[f"output:{name}"] = {"psi": round(score, 6), "n": sum(cur.values())}
            written += 1
        if scores:
            # The latest minute of the window carries the scores too (the dashboard's table).
            latest = (
                MetricRollup.objects.filter(
                    endpoint=endpoint,
                    deployment=deployment,
                    granularity=MetricRollup.Granularity.MINUTE,
                    minute__gte=start,
                    minute__lt=end,
                )
                .order_by("-minute")
                .values_list("pk", flat=True)[:1]
            )
            MetricRollup.objects.filter(pk__in=list(latest)).update(drift_scores=scores)
    return written


# --- alert rules -------------------------------------------------------------------------------------
RATE_METRICS = {AlertRule.Metric.ERROR_RATE, AlertRule.Metric.THROUGHPUT_DROP}
RULE_FIELDS = (
    "name",
    "deployment",
    "metric",
    "feature",
    "output",
    "comparison",
    "threshold",
    "window_minutes",
    "cooldown_minutes",
    "severity",
    "channel",
    "target",
    "enabled",
    "action",
)


def max_window_minutes(metric: str) -> int:
    """The longest window a rule can have: minutes are kept MONITORING_MINUTE_RETENTION_DAYS
    (then folded into hours), and a throughput drop reads two windows back to back."""
    minutes = int(settings.MONITORING_MINUTE_RETENTION_DAYS) * 24 * 60
    return minutes // 2 if metric == AlertRule.Metric.THROUGHPUT_DROP else minutes


def min_window_minutes(metric: str) -> int:
    """The shortest window a rule can have: one minute (the metrics' resolution), and for
    drift the interval of the drift job in the beat schedule (a shorter window would see
    a score only now and then)."""
    if metric != AlertRule.Metric.DRIFT_SCORE:
        return 1
    seconds = settings.MONITORING_DRIFT_INTERVAL_S
    return max(1, math.ceil(float(seconds) / 60))


def _choice(name: str, value: Any, choices: Iterable[str]) -> str:
    options = list(choices)
    if value not in options:
        raise DomainError(f"{name} must be one of {', '.join(options)}; got {value!r}", details={"field": name})
    return str(value)


def _validate_rule(values: dict[str, Any]) -> dict[str, Any]:
    """Check a rule's fields together; a refused value names the field and what is allowed."""
    out = dict(values)
    out["metric"] = _choice("metric", out.get("metric"), AlertRule.Metric.values)
    out["comparison"] = _choice("comparison", out.get("comparison", ">"), AlertRule.Comparison.values)
    out["severity"] = _choice("severity", out.get("severity", "warning"), AlertRule.Severity.values)
    out["channel"] = _choice("channel", out.get("channel", "dashboard"), AlertRule.Channel.values)
    out["action"] = _choice("action", out.get("action", "notify"), AlertRule.Action.values)
    threshold = out.get("threshold")
    if isinstance(threshold, str):
        try:
            threshold = float(threshold)
        except ValueError:
            pass
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise DomainError(
            f"threshold must be a finite number, got {out.get('threshold')!r}", details={"field": "threshold"}
        )
    if out["metric"] in RATE_METRICS and not 0 <= threshold <= 1:
        raise DomainError(
            f"threshold for {out['metric']} is a rate from 0 to 1, got {threshold!r}", details={"field": "threshold"}
        )
    if (
        out["metric"] in (AlertRule.Metric.P99_LATENCY_MS, AlertRule.Metric.NO_TRAFFIC, AlertRule.Metric.DRIFT_SCORE)
        and threshold < 0
    ):
        raise DomainError(
            f"threshold for {out['metric']} cannot be negative, got {threshold!r}", details={"field": "threshold"}
        )
    out["threshold"] = float(threshold)
    metric = out["metric"]
    for name, default, low, high, why in (
        (
            "window_minutes",
            5,
            min_window_minutes(metric),
            max_window_minutes(metric),
            f" for {metric} (the window the platform can evaluate: see docs/monitoring.md)",
        ),
        ("cooldown_minutes", 10, 0, 7 * 24 * 60, ""),
    ):
        value = out.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise DomainError(
                f"{name} must be a whole number of minutes from {low} to {high}{why}, got {value!r}",
                details={"field": name, "min": low, "max": high},
            )
        out[name] = value
    target = str(out.get("target") or "")
    if out["channel"] == AlertRule.Channel.WEBHOOK and not target.startswith(("http://", "https://")):
        raise DomainError("a webhook rule needs an http(s) URL as its target", details={"field": "target"})
    if out["channel"] == AlertRule.Channel.EMAIL:
        from django.core.validators import validate_email

        try:
            validate_email(target)
        except Exception:
            raise DomainError(
                f"an email rule needs an e-mail address as its target, got {target!r}", details={"field": "target"}
            ) from None
    out["target"] = target
    for name in ("name", "deployment", "feature", "output"):
        value = out.get(name, "")
        if not isinstance(value, str):
            raise DomainError(f"{name} must be a string", details={"field": name})
        out[name] = value
    if out["deployment"] and ":" not in out["deployment"]:
        raise DomainError("deployment must look like 'model:version'", details={"field": "deployment"})
    if not isinstance(out.get("enabled", True), bool):
        raise DomainError("enabled must be true or false", details={"field": "enabled"})
    return out


def alert_rule_dict(rule: AlertRule) -> dict[str, Any]:
    return {"endpoint": rule.endpoint.name, **{name: getattr(rule, name) for name in RULE_FIELDS}}


@transaction.atomic
def alert_rule_create(
    *, endpoint_name: str, values: Mapping[str, Any], user: User, source_ip: str | None = None
) -> AlertRule:
    from inference.models import Endpoint

    endpoint = Endpoint.objects.filter(name=endpoint_name).first()
    if endpoint is None:
        raise NotFound(f"no endpoint named {endpoint_name!r}")
    unknown = set(values) - set(RULE_FIELDS)
    if unknown:
        raise DomainError(f"unknown fields: {', '.join(sorted(unknown))}")
    clean = _validate_rule({**values})
    actor = user if user is not None and user.is_authenticated else None
    rule = AlertRule.objects.create(endpoint=endpoint, created_by=actor, **clean)
    audit_record(actor=user, action="alert_rule.create", obj=rule, after=alert_rule_dict(rule), source_ip=source_ip)
    return rule


@transaction.atomic
def alert_rule_update(
    *, rule_id: int, changes: Mapping[str, Any], user: User, source_ip: str | None = None
) -> AlertRule:
    rule = AlertRule.objects.select_for_update().select_related("endpoint").filter(pk=rule_id).first()
    if rule is None:
        raise NotFound(f"no alert rule {rule_id}")
    unknown = set(changes) - set(RULE_FIELDS)
    if unknown:
        raise DomainError(f"unknown or read-only fields: {', '.join(sorted(unknown))}")
    before = alert_rule_dict(rule)
    clean = _validate_rule({**before, **changes})
    for name in RULE_FIELDS:
        setattr(rule, name, clean[name])
    rule.save(update_fields=[*RULE_FIELDS, "updated_at"])
    audit_record(
        actor=user,
        action="alert_rule.update",
        obj=rule,
        before=before,
        after=alert_rule_dict(rule),
        source_ip=source_ip,
    )
    return rule


@transaction.atomic
def alert_rule_delete(*, rule_id: int, user: User, source_ip: str | None = None) -> None:
    rule = AlertRule.objects.select_for_update().select_related("endpoint").filter(pk=rule_id).first()
    if rule is None:
        raise NotFound(f"no alert rule {rule_id}")
    audit_record(actor=user, action="alert_rule.delete", obj=rule, before=alert_rule_dict(rule), source_ip=source_ip)
    rule.delete()


# --- alert evaluation --------------------------------------------------------------------------------
COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _window(rule: AlertRule, *, now: datetime) -> dict[str, Any]:
    """The rule's window through the one window selector (rolled-up and live minutes alike)."""
    from monitoring.selectors import endpoint_window_stats

    return endpoint_window_stats(
        rule.endpoint.name, rule.deployment or None, window_s=rule.window_minutes * 60, now=now
    )


def alert_metric_value(rule: AlertRule, *, now: datetime) -> float | None:
    """The rule's metric over its window (None: not enough data to say).

    Every metric but drift reads `selectors.endpoint_window_stats`, so the minute in
    progress counts as soon as it is flushed (every ~2 s), not only once beat rolled it
    up: a 1-minute rule fires within one evaluation interval of its minute.
    """
    start = now - timedelta(minutes=rule.window_minutes)
    metric = rule.metric
    if metric == AlertRule.Metric.DRIFT_SCORE:
        scores = DriftScore.objects.filter(endpoint=rule.endpoint.name, window_end__gt=start, window_end__lte=now)
        if rule.deployment:
            scores = scores.filter(deployment=rule.deployment)
        if rule.feature:
            scores = scores.filter(feature=rule.feature)
        values = list(scores.values_list("psi", flat=True))
        return max(values) if values else None
    if metric == AlertRule.Metric.THROUGHPUT_DROP:
        # Whole minutes only: the minute in progress would always look like a drop.
        closed = now.replace(second=0, microsecond=0)
        count = _window(rule, now=closed)["count"]
        previous = _window(rule, now=closed - timedelta(minutes=rule.window_minutes))["count"]
        return None if previous == 0 else max(0.0, 1.0 - count / previous)
    window = _window(rule, now=now)
    if metric == AlertRule.Metric.NO_TRAFFIC:
        return float(window["count"])
    if window["count"] == 0:
        return None
    if metric == AlertRule.Metric.ERROR_RATE:
        return window["error_rate"]
    if metric == AlertRule.Metric.P99_LATENCY_MS:
        return window["p99_ms"]
    if metric == AlertRule.Metric.OUTPUT_MEAN:
        return _output_mean(window["outputs"], rule.output)
    return None


def _output_mean(outputs: Mapping[str, Mapping[str, Any]], name: str) -> float | None:
    candidates = [name] if name else sorted(outputs)
    for candidate in candidates:
        part = outputs.get(candidate)
        if not part:
            continue
        if part.get("kind") == "float" and part.get("n"):
            return float(part["sum"]) / int(part["n"])
        if part.get("kind") == "class":
            try:
                pairs = [(float(label), c) for label, c in part.get("counts", {}).items()]
            except ValueError:
                continue
            n = sum(c for _, c in pairs)
            if n:
                return sum(v * c for v, c in pairs) / n
    return None


def alert_rule_evaluate(*, rule_id: int, now: datetime | None = None) -> AlertEvent | None:
    """Evaluate one rule; a transition (ok -> firing, firing -> resolved) writes an AlertEvent.

    Firing is de-duplicated (a firing rule does not fire again) and held back for
    `cooldown_minutes` after the previous firing. Notifications go out in their own task
    after commit, so a slow channel never holds up evaluation.
    """
    from monitoring.tasks import alert_notify

    now = now or timezone.now()
    with transaction.atomic():
        rule = AlertRule.objects.select_for_update().select_related("endpoint").filter(pk=rule_id).first()
        if rule is None or not rule.enabled:
            return None
        value = alert_metric_value(rule, now=now)
        breached = value is not None and COMPARE[rule.comparison](value, rule.threshold)
        kind: str | None = None
        if rule.state == AlertRule.State.OK and breached:
            cooled = rule.last_fired_at is None or now - rule.last_fired_at >= timedelta(minutes=rule.cooldown_minutes)
            if cooled:
                kind = AlertEvent.Kind.FIRING
                rule.state, rule.last_fired_at = AlertRule.State.FIRING, now
        elif rule.state == AlertRule.State.FIRING and value is not None and not breached:
            kind = AlertEvent.Kind.RESOLVED
            rule.state = AlertRule.State.OK
        rule.last_value, rule.last_evaluated_at = value, now
        rule.save(update_fields=["state", "last_value", "last_evaluated_at", "last_fired_at"])
        if kind is None:
            return None
        shown = "no data" if value is None else f"{value:.6g}"
        event = AlertEvent.objects.create(
            rule=rule,
            endpoint=rule.endpoint.name,
            kind=kind,
            value=value,
            threshold=rule.threshold,
            message=f"{rule.endpoint.name}{' ' + rule.deployment if rule.deployment else ''}: {rule.metric} is {shown} "
            f"({rule.comparison} {rule.threshold:g} over {rule.window_minutes} min) -> {kind}",
            notification=(
                AlertEvent.Notification.NOT_NEEDED
                if rule.channel == AlertRule.Channel.DASHBOARD
                else AlertEvent.Notification.PENDING
            ),
        )
        if rule.channel != AlertRule.Channel.DASHBOARD:
            event_id = event.pk
            transaction.on_commit(lambda: alert_notify.delay(event_id))
        if kind == AlertEvent.Kind.FIRING and rule.action == AlertRule.Action.ROLLBACK:
            alert = {
                "rule": rule.pk,
                "event": event.pk,
                "metric": rule.metric,
                "value": value,
                "comparison": rule.comparison,
                "threshold": rule.threshold,
                "window_minutes": rule.window_minutes,
                "message": event.message,
            }
            _alert_rollback_on_commit(rule.endpoint_id, alert)
    return event


def _alert_rollback_on_commit(endpoint_id: int, alert: dict[str, Any]) -> None:
    """Roll back the endpoint's rollout or canary after commit, in inference's task.

    Looked up by name in the app's task registry (which imports every app's tasks):
    inference imports monitoring (rollouts read its metrics), so monitoring does not
    import inference.
    """
    from workers.celery import app  # late, like monitoring.tasks above: the app loads tasks modules

    def enqueue() -> None:
        try:
            app.loader.import_default_modules()  # every app's tasks.py, as a worker does at start
            app.tasks["inference.alert_rollback"].delay(endpoint_id, alert)
        except Exception:
            log.exception("could not enqueue the rollback of alert event %s", alert["event"])

    transaction.on_commit(enqueue)


def alerts_evaluate(*, now: datetime | None = None) -> list[int]:
    """Evaluate every enabled rule, each on its own; one failing rule does not stop the rest."""
    events: list[int] = []
    for rule_id in AlertRule.objects.filter(enabled=True).order_by("id").values_list("id", flat=True):
        try:
            event = alert_rule_evaluate(rule_id=rule_id, now=now)
        except Exception:
            log.exception("evaluating alert rule %s failed", rule_id)
            continue
        if event is not None:
            events.append(event.pk)
    return events


def alert_notify(*, event_id: int) -> str:
    """Send one event to its rule's channel, with a short timeout; records the outcome."""
    event = AlertEvent.objects.select_related("rule", "rule__endpoint").filter(pk=event_id).first()
    if event is None or event.notification in (AlertEvent.Notification.SENT, AlertEvent.Notification.NOT_NEEDED):
        return "nothing to do"
    rule = event.rule
    body = {
        "rule": rule.pk,
        "name": rule.name,
        "endpoint": rule.endpoint.name,
        "deployment": rule.deployment,
        "metric": rule.metric,
        "comparison": rule.comparison,
        "threshold": rule.threshold,
        "value": event.value,
        "state": event.kind,
        "severity": rule.severity,
        "message": event.message,
        "at": event.created_at.isoformat(),
    }
    timeout = settings.MONITORING_ALERT_NOTIFY_TIMEOUT_S
    try:
        if rule.channel == AlertRule.Channel.WEBHOOK:
            import requests

            response = requests.post(rule.target, json=body, timeout=(timeout, timeout))
            if response.status_code >= 400:
                raise RuntimeError(f"webhook answered HTTP {response.status_code}")
            detail = f"HTTP {response.status_code}"
        else:
            from django.core.mail import send_mail

            send_mail(
                f"[modelhub {rule.severity}] {event.message}"[:200],
                json.dumps(body, indent=2),
                None,
                [rule.target],
                fail_silently=False,
            )
            detail = "sent"
        event.notification, event.notification_detail = AlertEvent.Notification.SENT, detail
    except Exception as exc:
        event.notification, event.notification_detail = AlertEvent.Notification.FAILED, str(exc)[:500]
    event.save(update_fields=["notification", "notification_detail"])
    return event.notification
