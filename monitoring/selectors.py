"""Pure reads of pre-aggregated monitoring data, as plain dicts and lists (no ORM objects)."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from config.errors import DomainError
from monitoring import keys
from monitoring.models import AlertEvent, AlertRule, DriftScore, MetricRollup, PayloadSample
from monitoring.services import ROLLUP_SUMS, add_rollup
from monitoring.stats import categorical_psi, latency_percentiles, summary_distribution

log = logging.getLogger(__name__)
MAX_POINTS = 2000


def endpoint_timeseries(endpoint: str, since: datetime, until: datetime, step: int = 60) -> dict[str, Any]:
    """Per-version series between `since` and `until` in `step`-second buckets (multiples of 60).

    {"endpoint", "since", "until", "step", "versions": {deployment: {"role", "t", "requests", "rps",
    "p50_ms", "p95_ms", "p99_ms", "error_rate", "errors", "batch_size", "queue_ms", "model_ms",
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
    buckets: dict[str, list[dict[str, Any]]] = {}
    roles: dict[str, str] = {}
    outputs: dict[str, dict[str, Any]] = defaultdict(dict)
    for row in rows:
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
    }


def endpoint_summary(endpoint: str, *, now: datetime, minutes: int = 60) -> dict[str, Any]:
    """Totals per version over the last `minutes`: requests, error rate, p50/p95/p99."""
    total: dict[str, dict[str, Any]] = {}
    for row in MetricRollup.objects.filter(endpoint=endpoint, minute__gte=now - timedelta(minutes=minutes)).values(
        "deployment", *ROLLUP_SUMS, "errors", "latency_buckets", "outputs"
    ):
        add_rollup(total.setdefault(row["deployment"], {}), row)
    return {deployment: _point(values, minutes * 60) for deployment, values in total.items()}


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


# --- one read of recent minutes: rolled up, plus the live counters not rolled up yet -----


def endpoint_window_stats(
    *, endpoint: str, since: datetime, until: datetime, include_shadow: bool = True
) -> dict[str, dict[str, Any]]:
    """Totals per deployment ("model:version") over the minutes that overlap [since, until).

    Reads the rolled-up minutes (MetricRollup) and, on the full stack, the per-minute
    Redis hashes that beat has not rolled up yet (the current minute and the grace
    period): where a minute is in both, Redis wins, as the roll-up itself would replace
    the row with it. So a window of a minute, or of seconds, sees requests a few seconds
    old (the flusher's interval). Rollout analysis (inference.rollouts) reads through this;
    alert evaluation over short windows should too. Values are roll-up sums (`count`,
    `error_count`, `latency_buckets`, `outputs`, ...) plus "role"; `window_point` turns
    them into rates. A Redis that cannot be read leaves the rolled-up minutes only.
    """
    first = since.replace(second=0, microsecond=0)
    buckets: dict[tuple[int, str, str], dict[str, Any]] = {}
    rows = MetricRollup.objects.filter(
        endpoint=endpoint, granularity=MetricRollup.Granularity.MINUTE, minute__gte=first, minute__lt=until
    )
    if not include_shadow:
        rows = rows.exclude(role="shadow")
    for row in rows.values("deployment", "role", "minute", *ROLLUP_SUMS, "errors", "latency_buckets", "outputs"):
        minute = int(row["minute"].timestamp() // 60)
        buckets[(minute, row["deployment"], row["role"])] = row
    for key, values in _live_minutes(endpoint, int(first.timestamp() // 60), int(until.timestamp() // 60)).items():
        if include_shadow or key[2] != "shadow":
            buckets[key] = values
    totals: dict[str, dict[str, Any]] = {}
    for (_, deployment, role), values in buckets.items():
        total = totals.setdefault(deployment, {"role": role})
        add_rollup(total, values)
    return totals


def _live_minutes(endpoint: str, first: int, last: int) -> dict[tuple[int, str, str], dict[str, Any]]:
    if not settings.REDIS_URL:
        return {}  # the embedded default writes minutes to the database as it flushes
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
    )
    try:
        names = [k.decode() for k in client.zrangebyscore(keys.MINUTES_INDEX, first, last)]
        names = [n for n in names if keys.parse_minute_key(n)[1] == endpoint]
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        hashes = pipe.execute() if names else []
    except redis.RedisError as exc:
        log.warning("live counters unreadable, using rolled-up minutes only: %s", exc)
        return {}
    out = {}
    for name, raw in zip(names, hashes, strict=True):
        if raw:
            minute, _, deployment, role = keys.parse_minute_key(name)
            out[(minute, deployment, role)] = keys.decode_hash(raw)
    return out


def window_point(values: dict[str, Any]) -> dict[str, Any]:
    """Requests, errors, error rate and p99 (ms) of one deployment's window totals."""
    count = values.get("count", 0)
    return {
        "requests": count,
        "errors": values.get("error_count", 0),
        "error_rate": values.get("error_count", 0) / count if count else None,
        "p99_ms": latency_percentiles(values.get("latency_buckets") or [], (0.99,))["p99"],
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
