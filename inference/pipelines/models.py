from __future__ import annotations

from django.conf import settings
from django.db import models


class Pipeline(models.Model):
    """A named, team-owned serving graph; what it does is in its versions."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    team = models.ForeignKey("accounts.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class PipelineVersion(models.Model):
    """One immutable spec of a pipeline, checked when saved (graph.pipeline_compile)."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    spec = models.JSONField()
    # What the check found: the pipeline's inputs and outputs, and the model versions it
    # resolved (stage aliases are resolved again whenever a routing table is built).
    signature = models.JSONField(default=dict)
    resolved_models = models.JSONField(default=list)
    comment = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pipeline__name", "-version"]
        constraints = [models.UniqueConstraint(fields=["pipeline", "version"], name="unique_pipeline_version")]

    def __str__(self) -> str:
        return f"{self.pipeline.name}:{self.version}"


class FeatureRow(models.Model):
    """The online feature store on the embedded default (Redis hashes on the full stack)."""

    feature_set = models.CharField(max_length=100)
    entity = models.CharField(max_length=200)
    values = models.JSONField(default=dict)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["feature_set", "entity"], name="unique_feature_entity")]

    def __str__(self) -> str:
        return f"{self.feature_set}:{self.entity}"


class FeatureSet(models.Model):
    """Who owns a feature set of the online store (its rows are FeatureRow / Redis hashes).

    Created by its first load (the loader's team) or by the first pipeline version that
    names it (the pipeline's team); a set that already held data before owners existed
    stays team-less. Its team never changes afterwards."""

    name = models.CharField(max_length=100, unique=True)
    team = models.ForeignKey("accounts.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    rows_loaded = models.PositiveIntegerField(default=0)  # entities written by the last load
    loaded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
