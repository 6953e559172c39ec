from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Team(models.Model):
    """Owns models and endpoints; members see and change only their team's things."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="teams", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class HashedKey(models.Model):
    """A secret handed out once (accounts/keys.py): the prefix finds the row, only the hash is kept."""

    prefix = models.CharField(max_length=12, unique=True)
    hashed = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    def mark_used(self) -> None:
        """Record the use, at most one write a minute per key."""
        now = timezone.now()
        if self.last_used_at is None or (now - self.last_used_at).total_seconds() > 60:
            type(self)._default_manager.filter(pk=self.pk).update(last_used_at=now)


class UserToken(HashedKey):
    """A person's API token; only its hash is kept."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)

    def __str__(self) -> str:
        return f"{self.user} token {self.prefix}"


class WorkerKey(HashedKey):
    """An inference worker's credential (`mh_worker_...`); only its hash is kept.

    Not a person and not in any team: it downloads artifacts by digest
    (`GET /api/v1/artifacts/{sha256}`) and no other route accepts it.
    """

    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return f"worker key {self.name} ({self.prefix})"
