"""Alert rules: their validation and changes, their evaluation over the window selector, notifications."""

from __future__ import annotations

import json
import logging
import math
import operator
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from config import queue
from config.errors import DomainError, NotFound
from inference.models import Endpoint
from monitoring.models import AlertEvent, AlertRule, DriftScore
from monitoring.selectors import endpoint_window_stats

log = logging.getLogger(__name__)

User = AbstractBaseUser | AnonymousUser | None


# --- alert rules -------------------------------------------------------------------------------------
RATE_METRICS = {AlertRule.Metric.ERROR_RATE, AlertRule.Metric.THROUGHPUT_DROP, AlertRule.Metric.OUTLIER_RATE}

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
    if metric == AlertRule.Metric.OUTLIER_RATE:
        return window["outlier_rate"]
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
            transaction.on_commit(lambda: queue.enqueue("monitoring.alert_notify", args=[event_id]))
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
    """Roll back the endpoint's rollout or canary after commit, in the rollouts app's task.

    Enqueued by name: the rollouts sit above monitoring (they read its metrics), so
    monitoring does not import them.
    """

    def enqueue() -> None:
        try:
            queue.enqueue("inference.alert_rollback", args=[endpoint_id, alert])
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
