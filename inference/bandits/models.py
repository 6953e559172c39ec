"""Bandit state in the database: all of it on the embedded default (no Redis), and the
periodic snapshot of the arm statistics with Redis (so that a Redis flush loses at most
one snapshot interval of learning)."""

from __future__ import annotations

from django.db import models


class BanditRouter(models.Model):
    """A router seen by `decide()`: its last configuration and the endpoints it served."""

    key = models.CharField(max_length=300, unique=True)
    config = models.JSONField(default=dict)
    endpoints = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class BanditArm(models.Model):
    """One arm's statistics: decisions that chose it (pulls) and the rewards it was taught
    (n, their sum s and sum of squares ss)."""

    router = models.ForeignKey(BanditRouter, on_delete=models.CASCADE, related_name="arms")
    arm = models.CharField(max_length=200)
    pulls = models.BigIntegerField(default=0)
    n = models.FloatField(default=0.0)
    s = models.FloatField(default=0.0)
    ss = models.FloatField(default=0.0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["router", "arm"], name="bandit_arm_unique")]

    def __str__(self) -> str:
        return f"{self.router_id}:{self.arm}"


class BanditDecision(models.Model):
    """The feedback ledger on the embedded default: one decision of one router for one
    request, and the reward fed back for it (kept for MODELHUB_BANDIT_LEDGER_RETENTION_S)."""

    request_id = models.CharField(max_length=200)
    router_key = models.CharField(max_length=300)
    arm = models.CharField(max_length=200)
    propensity = models.FloatField()
    endpoint = models.CharField(max_length=64, blank=True)
    learn = models.BooleanField(default=True)
    bernoulli = models.BooleanField(default=False)
    decided_at = models.DateTimeField(db_index=True)
    reward = models.FloatField(null=True)
    reward_count = models.IntegerField(default=0)
    rewarded_at = models.DateTimeField(null=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["request_id", "router_key"], name="bandit_decision_unique")]
        indexes = [models.Index(fields=["router_key", "decided_at"], name="bandit_decision_router")]

    def __str__(self) -> str:
        return f"{self.router_key}:{self.request_id}"


class BanditLedgerDropped(models.Model):
    """Decisions the ledger writers of every process dropped, by reason (buffer_full,
    store_unreachable): the embedded default's twin of the Redis hash
    modelhub:bandit:ledger_dropped, added to by each writer's next flush that gets through."""

    reason = models.CharField(max_length=40, unique=True)
    count = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.reason}: {self.count}"
