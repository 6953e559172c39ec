from __future__ import annotations

from rest_framework import serializers

from monitoring.models import AlertEvent, AlertRule, PayloadSample


class AlertRuleSerializer(serializers.ModelSerializer):
    endpoint = serializers.CharField(source="endpoint.name")

    class Meta:
        model = AlertRule
        fields = [
            "id",
            "endpoint",
            "deployment",
            "name",
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
            "state",
            "last_value",
            "last_evaluated_at",
            "last_fired_at",
            "created_at",
            "updated_at",
        ]


class AlertRuleWriteSerializer(serializers.Serializer):
    """For the schema: the service checks the values (metric, comparison, ranges, target)."""

    endpoint = serializers.CharField(help_text="endpoint name (create only)")
    deployment = serializers.CharField(required=False, help_text="'model:version'; blank = the whole endpoint")
    name = serializers.CharField(required=False)
    metric = serializers.ChoiceField(choices=AlertRule.Metric.choices)
    feature = serializers.CharField(required=False, help_text="drift_score: one feature (blank = the worst)")
    output = serializers.CharField(required=False, help_text="output_mean: one output")
    comparison = serializers.ChoiceField(choices=AlertRule.Comparison.choices, required=False)
    threshold = serializers.FloatField()
    window_minutes = serializers.IntegerField(required=False, min_value=1)
    cooldown_minutes = serializers.IntegerField(required=False, min_value=0)
    severity = serializers.ChoiceField(choices=AlertRule.Severity.choices, required=False)
    channel = serializers.ChoiceField(choices=AlertRule.Channel.choices, required=False)
    target = serializers.CharField(required=False, help_text="webhook URL or e-mail address")
    enabled = serializers.BooleanField(required=False)
    action = serializers.ChoiceField(
        choices=AlertRule.Action.choices,
        required=False,
        help_text="rollback: when it fires, roll back the endpoint's running rollout, or drop its canary",
    )


class AlertEventSerializer(serializers.ModelSerializer):
    rule_name = serializers.CharField(source="rule.name")
    metric = serializers.CharField(source="rule.metric")
    severity = serializers.CharField(source="rule.severity")

    class Meta:
        model = AlertEvent
        fields = [
            "id",
            "rule",
            "rule_name",
            "endpoint",
            "metric",
            "severity",
            "kind",
            "value",
            "threshold",
            "message",
            "notification",
            "notification_detail",
            "created_at",
        ]


class PayloadSampleSerializer(serializers.ModelSerializer):
    class Meta:
        model = PayloadSample
        fields = [
            "sample_id",
            "endpoint",
            "deployment",
            "role",
            "ok",
            "latency_ms",
            "request",
            "response",
            "truncated",
            "at",
        ]


class MonitoringSettingsSerializer(serializers.Serializer):
    payload_sample_rate = serializers.FloatField(required=False, help_text="0..1")
    drift_sample_rate = serializers.FloatField(required=False, help_text="0..1")
    max_payload_bytes = serializers.IntegerField(required=False)
    redact_fields = serializers.ListField(child=serializers.CharField(), required=False)
