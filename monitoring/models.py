"""Monitoring tables: metric roll-ups, drift scores, samples, settings, alert rules and events.

Roll-ups and samples name endpoints and deployments by their strings, not by foreign keys:
history outlives an endpoint that is deleted or a deployment that is retired.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class MetricRollup(models.Model):
    """Per endpoint, deployment ("model:version"), role and minute (or hour): what happened."""

    class Granularity(models.TextChoices):
        MINUTE = "minute"
        HOUR = "hour"

    endpoint = models.CharField(max_length=64)
    deployment = models.CharField(max_length=140)
    role = models.CharField(max_length=16)
    granularity = models.CharField(max_length=8, choices=Granularity.choices, default=Granularity.MINUTE)
    minute = models.DateTimeField()  # start of the bucket (a minute, or an hour)
    count = models.BigIntegerField(default=0)
    rows = models.BigIntegerField(default=0)
    error_count = models.BigIntegerField(default=0)
    errors = models.JSONField(default=dict, blank=True)  # {kind: count}
    latency_buckets = models.JSONField(default=list, blank=True)  # counts per LATENCY_BUCKETS_MS (+Inf last)
    latency_sum_ms = models.FloatField(default=0.0)
    batch_rows_sum = models.BigIntegerField(default=0)
    batch_count = models.BigIntegerField(default=0)
    queue_ms_sum = models.FloatField(default=0.0)
    model_ms_sum = models.FloatField(default=0.0)
    outputs = models.JSONField(
        default=dict, blank=True
    )  # {output: {"kind": "class", "counts"} | {"kind": "float", ...}}
    outputs_skipped = models.BigIntegerField(default=0)
    # Rows scored against the version's reference (endpoints with outlier_scoring) and outliers among them.
    scored_rows = models.BigIntegerField(default=0)
    outlier_rows = models.BigIntegerField(default=0)
    # Shadow rows only: answers compared with what the caller got, and how many agreed.
    shadow_compared = models.BigIntegerField(default=0)
    shadow_agreed = models.BigIntegerField(default=0)
    drift_scores = models.JSONField(default=dict, blank=True)  # {feature: {"psi", "ks", "p_value"}}
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["endpoint", "deployment", "minute"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "deployment", "role", "granularity", "minute"], name="unique_rollup_bucket"
            )
        ]
        indexes = [models.Index(fields=["endpoint", "granularity", "minute"], name="rollup_endpoint_time")]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.deployment} {self.role} {self.minute:%Y-%m-%d %H:%M} ({self.granularity})"


class InputSample(models.Model):
    """Sampled input feature values of one deployment in one minute, for drift.

    A minute may have several rows: on the embedded default each flush of each web process
    appends one (a flush never reads stored samples back, so it costs the same at the end
    of a minute as at its start); the Redis roll-up writes one per minute. Readers add up
    the rows of a window.
    """

    endpoint = models.CharField(max_length=64)
    deployment = models.CharField(max_length=140)
    minute = models.DateTimeField()
    features = models.JSONField(default=dict)  # {feature: [values...]}
    rows = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["deployment", "minute"]
        indexes = [models.Index(fields=["deployment", "minute"], name="input_sample_time")]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.deployment} inputs at {self.minute:%Y-%m-%d %H:%M}"


class DriftScore(models.Model):
    """One feature's (or output's) drift against the version's reference, over a window."""

    class Kind(models.TextChoices):
        INPUT = "input"
        OUTPUT = "output"

    endpoint = models.CharField(max_length=64)
    deployment = models.CharField(max_length=140)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.INPUT)
    feature = models.CharField(max_length=200)
    window_end = models.DateTimeField()
    window_minutes = models.PositiveIntegerField()
    psi = models.FloatField()
    ks_statistic = models.FloatField(null=True, blank=True)
    ks_p_value = models.FloatField(null=True, blank=True)
    n = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-window_end", "deployment", "feature"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "deployment", "kind", "feature", "window_end"], name="unique_drift_score"
            )
        ]
        indexes = [models.Index(fields=["endpoint", "window_end"], name="drift_endpoint_time")]

    def __str__(self) -> str:
        return f"{self.deployment} {self.kind} {self.feature} psi={self.psi:.3f}"


class PayloadSample(models.Model):
    """A sampled request/response pair, redacted and size-capped before it was stored."""

    sample_id = models.CharField(max_length=32, unique=True)
    endpoint = models.CharField(max_length=64, db_index=True)
    deployment = models.CharField(max_length=140)
    role = models.CharField(max_length=16)
    ok = models.BooleanField(default=True)
    latency_ms = models.FloatField(default=0.0)
    request = models.TextField(blank=True)
    response = models.TextField(blank=True)
    truncated = models.BooleanField(default=False)
    at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.endpoint} sample {self.sample_id}"


class MonitoringSettings(models.Model):
    """Per-endpoint monitoring configuration: sampling rates, size cap, redaction."""

    endpoint = models.OneToOneField("inference.Endpoint", on_delete=models.CASCADE, related_name="monitoring")
    payload_sample_rate = models.FloatField(default=0.0)
    drift_sample_rate = models.FloatField(default=0.05)
    max_payload_bytes = models.PositiveIntegerField(default=16384)
    redact_fields = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"monitoring settings for {self.endpoint.name}"


class AlertRule(models.Model):
    class Metric(models.TextChoices):
        P99_LATENCY_MS = "p99_latency_ms"
        ERROR_RATE = "error_rate"
        THROUGHPUT_DROP = "throughput_drop"
        DRIFT_SCORE = "drift_score"
        OUTPUT_MEAN = "output_mean"
        NO_TRAFFIC = "no_traffic"
        OUTLIER_RATE = "outlier_rate"  # outlier rows / scored rows (endpoints with outlier_scoring)

    class Comparison(models.TextChoices):
        GT = ">"
        GTE = ">="
        LT = "<"
        LTE = "<="

    class Severity(models.TextChoices):
        INFO = "info"
        WARNING = "warning"
        CRITICAL = "critical"

    class Channel(models.TextChoices):
        WEBHOOK = "webhook"
        EMAIL = "email"
        DASHBOARD = "dashboard"

    class State(models.TextChoices):
        OK = "ok"
        FIRING = "firing"

    class Action(models.TextChoices):
        NOTIFY = "notify", "notify only"
        ROLLBACK = "rollback", "roll back the endpoint's rollout or canary when it fires"

    endpoint = models.ForeignKey("inference.Endpoint", on_delete=models.CASCADE, related_name="alert_rules")
    deployment = models.CharField(max_length=140, blank=True)  # "model:version"; blank = the whole endpoint
    name = models.CharField(max_length=120, blank=True)
    metric = models.CharField(max_length=32, choices=Metric.choices)
    feature = models.CharField(max_length=200, blank=True)  # drift_score: one feature (blank = the worst)
    output = models.CharField(max_length=200, blank=True)  # output_mean: one output (blank = the first)
    comparison = models.CharField(max_length=2, choices=Comparison.choices, default=Comparison.GT)
    threshold = models.FloatField()
    window_minutes = models.PositiveIntegerField(default=5)
    cooldown_minutes = models.PositiveIntegerField(default=10)
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.WARNING)
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.DASHBOARD)
    target = models.CharField(max_length=500, blank=True)  # webhook URL or e-mail address
    # What firing does besides the notification (rollouts.services.alert_rollback).
    action = models.CharField(max_length=16, choices=Action.choices, default=Action.NOTIFY)
    enabled = models.BooleanField(default=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.OK)
    last_value = models.FloatField(null=True, blank=True)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    last_fired_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["endpoint__name", "id"]

    def __str__(self) -> str:
        label = self.name or f"{self.metric} {self.comparison} {self.threshold:g}"
        return f"{self.endpoint.name}: {label}"


class AlertEvent(models.Model):
    """A transition of a rule: firing or resolved, with the value that caused it."""

    class Kind(models.TextChoices):
        FIRING = "firing"
        RESOLVED = "resolved"

    class Notification(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"
        NOT_NEEDED = "not_needed"

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="events")
    endpoint = models.CharField(max_length=64, db_index=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    value = models.FloatField(null=True, blank=True)
    threshold = models.FloatField()
    message = models.TextField(blank=True)
    notification = models.CharField(max_length=16, choices=Notification.choices, default=Notification.PENDING)
    notification_detail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.rule} {self.kind} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class SchedulerHeartbeat(models.Model):
    """When the periodic jobs last ran: written by the `monitoring.scheduler_heartbeat` job of
    the beat schedule, so by celery beat (through a worker) or by the embedded scheduler,
    whichever runs that one list. Pages read it to say honestly whether alert rules and
    drift are being evaluated."""

    name = models.CharField(max_length=64, unique=True)
    last_run_at = models.DateTimeField()
    runner = models.CharField(max_length=200, blank=True)  # host and process that ran it

    def __str__(self) -> str:
        return f"{self.name} at {self.last_run_at:%Y-%m-%d %H:%M:%S} by {self.runner}"
