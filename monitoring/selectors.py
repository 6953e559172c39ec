"""Pure reads of pre-aggregated monitoring data, as plain dicts and lists (no ORM objects)."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from config.errors import DomainError
from inference.models import RolloutEvent, TrafficPolicyRevision
from monitoring import keys
from monitoring.models import AlertEvent, AlertRule, DriftScore, MetricRollup, PayloadSample, SchedulerHeartbeat
from monitoring.rollups import ROLLUP_SUMS, add_rollup, minute_dt, rollup_redis
from monitoring.stats import categorical_psi, latency_percentiles, summary_distribution

log = logging.getLogger(__name__)
MAX_POINTS = 2000


def endpoint_timeseries(endpoint: str, since: datetime, until: datetime, step: int = 60) -> dict[str, Any]:
    """Per-version series between `since` and `until` in `step`-second buckets (multiples of 60).

    {"endpoint", "since", "until", "step", "versions": {deployment: {"role", "t", "requests", "rps",
    "p50_ms", "p95_ms", "p99_ms", "error_rate", "errors", "batch_size", "queue_ms", "model_ms", "outlier_rate",
    "outputs": {output: summary over the range}, "drift": {feature: {"t", "psi", "ks", "p_value"}}}}}
    Buckets with no requests have None for rates and percentiles (and 0 requests).
    """
    if step < 60 or step % 60:
        raise DomainError(f"step must be a multiple of 60 seconds, got {step}")
    if until <= since:
        raise DomainError("until must be after since")
    start = since.replace(second=0, microsecond=0)
    n_points = int((until - start).total_seconds() // step) + 1
    if n_points > MAX_POINTS:
        raise DomainError(f"that range at step {step} s has {n_points} points; the most is {MAX_POINTS}")
    times = [start + timedelta(seconds=i * step) for i in range(n_points)]
    rows = MetricRollup.objects.filter(endpoint=endpoint, minute__gte=start, minute__lt=until).values(
        "deployment", "role", "minute", "granularity", *ROLLUP_SUMS, "errors", "latency_buckets", "outputs"
    )
    # One cell per (granularity, bucket start, deployment, role); the live minutes still in
    # Redis replace the same minute's roll-up (see endpoint_window_stats), so a fresh
    # endpoint's first minute is on the chart within a flush, not after the roll-up.
    cells: dict[tuple[str, datetime, str, str], dict[str, Any]] = {}
    for row in rows:
        cells[(row["granularity"], row["minute"], row["deployment"], row["role"])] = row
    first = int(start.timestamp() // 60)
    last = math.ceil(until.timestamp() / 60) - 1
    live, _error = _live_minutes(endpoint, first, max(first, last), None)
    for (minute, deployment, role), values in live.items():
        cells[(MetricRollup.Granularity.MINUTE, minute_dt(minute), deployment, role)] = {
            **values,
            "deployment": deployment,
            "role": role,
            "minute": minute_dt(minute),
        }
    buckets: dict[str, list[dict[str, Any]]] = {}
    roles: dict[str, str] = {}
    outputs: dict[str, dict[str, Any]] = defaultdict(dict)
    for row in cells.values():
        deployment = row["deployment"]
        roles.setdefault(deployment, row["role"])
        series = buckets.setdefault(deployment, [{} for _ in times])
        index = int((row["minute"] - start).total_seconds() // step)
        if 0 <= index < n_points:
            add_rollup(series[index], row)
            add_rollup(outputs[deployment], {"outputs": row["outputs"]})
    versions: dict[str, Any] = {}
    for deployment, series in buckets.items():
        points = [_point(b, step) for b in series]
        versions[deployment] = {
            "role": roles[deployment],
            "t": [t.isoformat() for t in times],
            **{key: [p[key] for p in points] for key in points[0]},
            "outputs": outputs[deployment].get("outputs", {}),
            "drift": {},
        }
    for score in (
        DriftScore.objects.filter(endpoint=endpoint, window_end__gte=start, window_end__lte=until)
        .order_by("window_end")
        .values("deployment", "kind", "feature", "window_end", "psi", "ks_statistic", "ks_p_value")
    ):
        entry = versions.setdefault(
            score["deployment"], {"role": "", "t": [t.isoformat() for t in times], "outputs": {}, "drift": {}}
        )
        name = score["feature"] if score["kind"] == DriftScore.Kind.INPUT else f"output:{score['feature']}"
        line = entry["drift"].setdefault(name, {"t": [], "psi": [], "ks": [], "p_value": []})
        line["t"].append(score["window_end"].isoformat())
        line["psi"].append(score["psi"])
        line["ks"].append(score["ks_statistic"])
        line["p_value"].append(score["ks_p_value"])
    return {
        "endpoint": endpoint,
        "since": start.isoformat(),
        "until": until.isoformat(),
        "step": step,
        "versions": versions,
    }


def _point(values: dict[str, Any], step: int) -> dict[str, Any]:
    count = values.get("count", 0)
    pct = latency_percentiles(values.get("latency_buckets") or [], (0.5, 0.95, 0.99))
    batch_count = values.get("batch_count", 0)
    return {
        "requests": count,
        "rps": round(count / step, 4),
        "p50_ms": pct["p50"],
        "p95_ms": pct["p95"],
        "p99_ms": pct["p99"],
        "error_rate": round(values.get("error_count", 0) / count, 6) if count else None,
        "errors": dict(values.get("errors") or {}),
        "batch_size": round(values["batch_rows_sum"] / batch_count, 3) if batch_count else None,
        "queue_ms": round(values.get("queue_ms_sum", 0) / count, 3) if count else None,
        "model_ms": round(values.get("model_ms_sum", 0) / count, 3) if count else None,
        "outlier_rate": _outlier_rate(values, 6),
    }


def _outlier_rate(values: dict[str, Any], digits: int | None = None) -> float | None:
    """Outlier rows over scored rows (None when nothing was scored)."""
    scored = values.get("scored_rows") or 0
    if not scored:
        return None
    rate = (values.get("outlier_rows") or 0) / scored
    return round(rate, digits) if digits is not None else rate


def endpoint_annotations(endpoint: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """What happened to an endpoint between two times, for markers on its charts.

    [{"t": iso time, "kind": "traffic" | "rollout" | "alert", "text": one line}], oldest
    first: every traffic revision (a deploy, a split change, a rollback), every rollout
    decision (start, step, pause, rollback, success; not the passing analyses in between)
    and every alert firing or resolving.
    """
    out: list[tuple[datetime, str, str]] = []
    for rev in TrafficPolicyRevision.objects.filter(
        endpoint__name=endpoint, created_at__gte=since, created_at__lte=until
    ).only("revision", "routes", "comment", "created_at"):
        split = ", ".join(
            f"{r.get('model')}:{r.get('version')} {r.get('role')} {r.get('weight')}%" for r in rev.routes or []
        )
        text = f"traffic r{rev.revision}: {split or 'no routes'}"
        if rev.comment:
            text += f" ({rev.comment[:80]})"
        out.append((rev.created_at, "traffic", text))
    decisions = RolloutEvent.objects.filter(
        rollout__endpoint__name=endpoint, created_at__gte=since, created_at__lte=until
    ).exclude(kind="analysis")
    for decision in decisions.only("kind", "detail", "created_at"):
        out.append((decision.created_at, "rollout", f"rollout {decision.kind}: {decision.detail[:120]}"))
    events = AlertEvent.objects.filter(endpoint=endpoint, created_at__gte=since, created_at__lte=until)
    for event in events.select_related("rule"):
        rule = event.rule
        name = rule.name or f"{rule.metric} {rule.comparison} {rule.threshold:g}"
        value = "no data" if event.value is None else f"{event.value:.4g}"
        out.append((event.created_at, "alert", f"alert {event.kind}: {name} ({value})"))
    out.sort(key=lambda item: item[0])
    return [{"t": t.isoformat(), "kind": kind, "text": text} for t, kind, text in out]


def alert_rule_list(*, endpoint: str = "", metric: str = "", state: str = "") -> QuerySet[AlertRule]:
    rules = AlertRule.objects.select_related("endpoint")
    if endpoint:
        rules = rules.filter(endpoint__name=endpoint)
    if metric:
        rules = rules.filter(metric=metric)
    if state:
        rules = rules.filter(state=state)
    return rules


def alert_event_list(
    *,
    endpoint: str = "",
    rule: int | None = None,
    kind: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    severity: str = "",
) -> QuerySet[AlertEvent]:
    events = AlertEvent.objects.select_related("rule")
    if endpoint:
        events = events.filter(endpoint=endpoint)
    if rule is not None:
        events = events.filter(rule_id=rule)
    if kind:
        events = events.filter(kind=kind)
    if severity:
        events = events.filter(rule__severity=severity)
    if since is not None:
        events = events.filter(created_at__gte=since)
    if until is not None:
        events = events.filter(created_at__lt=until)
    return events


def payload_sample_list(*, endpoint: str, deployment: str = "") -> QuerySet[PayloadSample]:
    samples = PayloadSample.objects.filter(endpoint=endpoint)
    return samples.filter(deployment=deployment) if deployment else samples


# --- one window over rolled-up and live minutes -----------------------------------------------------
WINDOW_MIN_S = 60


def window_limit_s() -> int:
    """The longest window the platform keeps minute data for (MONITORING_MINUTE_RETENTION_DAYS)."""
    return int(settings.MONITORING_MINUTE_RETENTION_DAYS) * 24 * 3600


def window_minutes(window_s: int, now: datetime) -> tuple[int, int]:
    """The first and last minute (unix minutes) of a window: every minute overlapping [now - window_s, now)."""
    end = now.timestamp()
    first = int((end - window_s) // 60)
    last = math.ceil(end / 60) - 1
    return first, max(first, last)


def check_window(window_s: Any, *, field: str = "window_s") -> int:
    """A window in seconds the platform can honour, or a DomainError (400) that says which it can."""
    limit = window_limit_s()
    if isinstance(window_s, bool) or not isinstance(window_s, int) or not WINDOW_MIN_S <= window_s <= limit:
        raise DomainError(
            f"{field} must be a whole number of seconds from {WINDOW_MIN_S} (one minute, the resolution of the "
            f"metrics) to {limit} (the minute retention, MODELHUB_MONITORING_MINUTE_RETENTION_DAYS); "
            f"got {window_s!r}",
            details={"field": field, "min": WINDOW_MIN_S, "max": limit},
        )
    return window_s


def endpoint_window_stats(
    endpoint: str,
    version: str | None = None,
    *,
    window_s: int = 300,
    now: datetime | None = None,
    include_shadow: bool = False,
) -> dict[str, Any]:
    """What an endpoint (or one version of it) did over the last `window_s` seconds, up to `now`.

    THE read for "how is it doing right now": alert evaluation and rollout analysis use it.
    It combines the rolled-up minutes in PostgreSQL (MetricRollup) with the live minutes
    that beat has not rolled up yet (still in Redis, `mh:m:*`); for a minute present in
    both, Redis wins (the roll-up copies the Redis hash, so it is the newer or equal
    count). On the embedded default (no REDIS_URL) the flusher writes into MetricRollup
    itself, so the database alone is live, at most one flush interval (2 s) behind.

    Resolution is one minute: the window covers every minute that overlaps
    [now - window_s, now), so a 60 s window at 12:00:20 reads 11:59 and the minute in
    progress, 12:00. `version` is a deployment label "model:version" (as in the metrics
    API); None means the whole endpoint, without shadow traffic unless `include_shadow`.
    Windows shorter than a minute or longer than the minute retention raise DomainError.
    If Redis cannot be read, the answer comes from the database alone and says so in
    `live_error`.

    Returns {"endpoint", "version", "window_s", "since", "until", "count", "rows",
    "error_count", "errors": {kind: n}, "error_rate", "p50_ms", "p95_ms", "p99_ms",
    "mean_latency_ms", "rps", "batch_size" (mean rows per model call), "queue_ms",
    "model_ms" (means per request), "scored_rows", "outlier_rows", "outlier_rate" (None
    when no row was scored), "outputs": {output: summary}, "shadow_compared",
    "shadow_agreed", "shadow_agreement" (shadow answers compared with the answer the caller
    got, how many agreed, their share; None when none were compared), "versions": {label:
    the same numbers plus "role"}, "live_minutes" (minute buckets read from Redis),
    "live_error"}. Rates and percentiles are None when there were no requests.
    """
    window_s = check_window(window_s)
    now = now or timezone.now()
    first, last = window_minutes(window_s, now)
    buckets, live_count, live_error = _window_buckets(endpoint, first, last, version)
    per_version: dict[str, dict[str, Any]] = {}
    roles: dict[str, str] = {}
    total: dict[str, Any] = {}
    for (_minute, deployment, role), values in buckets.items():
        add_rollup(per_version.setdefault(deployment, {}), values)
        roles.setdefault(deployment, role)
        if include_shadow or version or role != "shadow":
            add_rollup(total, values)
    return {
        "endpoint": endpoint,
        "version": version,
        "window_s": window_s,
        "since": minute_dt(first).isoformat(),
        "until": now.isoformat(),
        **_window_point(total, now.timestamp() - first * 60),
        "versions": {
            deployment: {"role": roles[deployment], **_window_point(values, now.timestamp() - first * 60)}
            for deployment, values in sorted(per_version.items())
        },
        "live_minutes": live_count,
        "live_error": live_error,
    }


def _window_buckets(
    endpoint: str, first: int, last: int, version: str | None = None
) -> tuple[dict[tuple[int, str, str], dict[str, Any]], int, str | None]:
    """Roll-up sums per (unix minute, deployment, role) between two unix minutes (inclusive):
    the rolled-up rows, overlaid by the live minutes still in Redis (Redis wins: the roll-up
    copies its hash). Also how many live minutes were read, and why Redis could not be."""
    buckets: dict[tuple[int, str, str], dict[str, Any]] = {}
    rows = MetricRollup.objects.filter(
        endpoint=endpoint,
        granularity=MetricRollup.Granularity.MINUTE,
        minute__gte=minute_dt(first),
        minute__lte=minute_dt(last),
    )
    if version:
        rows = rows.filter(deployment=version)
    for row in rows.values("deployment", "role", "minute", *ROLLUP_SUMS, "errors", "latency_buckets", "outputs"):
        minute = int(row["minute"].timestamp() // 60)
        buckets[(minute, row["deployment"], row["role"])] = row
    live, live_error = _live_minutes(endpoint, first, last, version)
    buckets.update(live)
    return buckets, len(live), live_error


def deployment_window_totals(
    *, endpoint: str, since: datetime, until: datetime, include_shadow: bool = True
) -> dict[str, dict[str, Any]]:
    """Roll-up sums per deployment ("model:version", plus its "role") over the minutes that
    overlap [since, until), rolled-up and live alike (the same read as endpoint_window_stats,
    kept as sums so callers can add deployments together: rollout analysis adds the stable
    routes). `window_point` turns sums into rates."""
    first = int(since.timestamp() // 60)
    last = max(first, math.ceil(until.timestamp() / 60) - 1)
    buckets, _, _ = _window_buckets(endpoint, first, last)
    totals: dict[str, dict[str, Any]] = {}
    for (_minute, deployment, role), values in buckets.items():
        if include_shadow or role != "shadow":
            add_rollup(totals.setdefault(deployment, {"role": role}), values)
    return totals


def window_point(values: dict[str, Any]) -> dict[str, Any]:
    """Requests, errors, error rate, p99 (ms) and shadow agreement of one deployment's window sums."""
    count = values.get("count", 0)
    return {
        "requests": count,
        "errors": values.get("error_count", 0),
        "error_rate": values.get("error_count", 0) / count if count else None,
        "p99_ms": latency_percentiles(values.get("latency_buckets") or [], (0.99,))["p99"],
        **_agreement(values),
    }


def _agreement(values: dict[str, Any]) -> dict[str, Any]:
    """Of the shadow answers compared with the caller's answer, how many agreed (None: none compared)."""
    compared, agreed = int(values.get("shadow_compared") or 0), int(values.get("shadow_agreed") or 0)
    return {
        "shadow_compared": compared,
        "shadow_agreed": agreed,
        "shadow_agreement": agreed / compared if compared else None,
    }


def output_psi(candidate: dict[str, Any], stable: dict[str, Any]) -> tuple[float | None, str]:
    """The largest PSI of an output's distribution, candidate against stable, and its name."""
    worst: tuple[float | None, str] = (None, "")
    for name, part in (candidate.get("outputs") or {}).items():
        other = (stable.get("outputs") or {}).get(name)
        if not other or other.get("kind") != part.get("kind"):
            continue
        cur, ref = summary_distribution(part), summary_distribution(other)
        if not sum(cur.values()) or not sum(ref.values()):
            continue
        value = categorical_psi(ref, cur)
        if worst[0] is None or value > worst[0]:
            worst = (round(value, 6), name)
    return worst


def _window_point(values: dict[str, Any], seconds: float) -> dict[str, Any]:
    count = int(values.get("count", 0))
    pct = latency_percentiles(values.get("latency_buckets") or [], (0.5, 0.95, 0.99))
    batch_count = values.get("batch_count", 0)
    return {
        "count": count,
        "rows": int(values.get("rows", 0)),
        "error_count": int(values.get("error_count", 0)),
        "errors": dict(values.get("errors") or {}),
        "error_rate": values.get("error_count", 0) / count if count else None,
        "p50_ms": pct["p50"],
        "p95_ms": pct["p95"],
        "p99_ms": pct["p99"],
        "mean_latency_ms": values.get("latency_sum_ms", 0.0) / count if count else None,
        "rps": count / seconds if seconds > 0 else None,
        "batch_size": values["batch_rows_sum"] / batch_count if batch_count else None,
        "queue_ms": values.get("queue_ms_sum", 0.0) / count if count else None,
        "model_ms": values.get("model_ms_sum", 0.0) / count if count else None,
        "scored_rows": int(values.get("scored_rows") or 0),
        "outlier_rows": int(values.get("outlier_rows") or 0),
        "outlier_rate": _outlier_rate(values),
        "outputs": values.get("outputs") or {},
        **_agreement(values),
    }


def _live_minutes(
    endpoint: str, first: int, last: int, version: str | None
) -> tuple[dict[tuple[int, str, str], dict[str, Any]], str | None]:
    """The minute hashes still in Redis for this endpoint between two unix minutes (inclusive)."""
    if not settings.REDIS_URL:
        return {}, None
    try:
        client = rollup_redis()
        names: list[str] = []
        for raw in client.zrangebyscore(keys.MINUTES_INDEX, first, last):
            name = raw.decode()
            _minute, ep, deployment, _role = keys.parse_minute_key(name)
            if ep == endpoint and (not version or deployment == version):
                names.append(name)
        if not names:
            return {}, None
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        hashes = pipe.execute()
    except Exception as exc:  # Redis away: answer from the database, and say so
        return {}, f"live minutes unavailable: {exc}"[:300]
    out: dict[tuple[int, str, str], dict[str, Any]] = {}
    for name, raw in zip(names, hashes, strict=True):
        if raw:  # an expired key has no fields
            minute, _ep, deployment, role = keys.parse_minute_key(name)
            out[(minute, deployment, role)] = keys.decode_hash(raw)
    return out, None


def scheduler_status(*, now: datetime | None = None) -> dict[str, Any]:
    """Whether the periodic jobs (roll-ups, drift, alert evaluation) are running, from the
    heartbeat the `monitoring-scheduler-heartbeat` job of the beat schedule writes.

    {"running", "last_run_at" (iso or None), "age_s", "runner", "stale_after_s"}: running
    means a heartbeat within three of its intervals (at least 90 s).
    """
    stale_after = max(90.0, 3 * float(settings.MONITORING_SCHEDULER_HEARTBEAT_S))
    now = now or timezone.now()
    row = SchedulerHeartbeat.objects.filter(name="scheduler").first()
    age = (now - row.last_run_at).total_seconds() if row is not None else None
    return {
        "running": age is not None and age <= stale_after,
        "last_run_at": row.last_run_at.isoformat() if row is not None else None,
        "age_s": age,
        "runner": row.runner if row is not None else "",
        "stale_after_s": stale_after,
    }
