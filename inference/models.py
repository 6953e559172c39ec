from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from inference.spec import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_QUEUE_DELAY_MS


class Endpoint(models.Model):
    """A stable name applications call; its traffic policy says which versions answer."""

    class Follow(models.TextChoices):
        NONE = "none", "does not follow promotions"
        IMMEDIATE = "immediate", "moves to a newly promoted production version at once"
        CANARY = "canary", "starts a newly promoted production version as a canary"

    class Environment(models.TextChoices):
        # What the endpoint may serve (inference.environments.environment_rule_check):
        # production takes Production versions only, staging Staging or Production,
        # development any validated version. Development is the default so that trying a
        # model needs no approval; production is chosen explicitly, at creation.
        PRODUCTION = "production"
        STAGING = "staging"
        DEVELOPMENT = "development"

    name = models.SlugField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    team = models.ForeignKey("accounts.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="endpoints")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    environment = models.CharField(max_length=16, choices=Environment.choices, default=Environment.DEVELOPMENT)
    # The model whose Production stage this endpoint follows (see `follow`).
    follows_model = models.ForeignKey(
        "registry.RegisteredModel", null=True, blank=True, on_delete=models.SET_NULL, related_name="following_endpoints"
    )
    follow = models.CharField(max_length=16, choices=Follow.choices, default=Follow.NONE)
    canary_weight = models.PositiveSmallIntegerField(default=10)
    # Pre/post-processing: feature defaults, input scaling, business rules on outputs.
    preprocessing = models.JSONField(default=dict, blank=True)
    postprocessing = models.JSONField(default=dict, blank=True)
    # Limits: max rows per request, per-request deadline.
    max_rows_per_request = models.PositiveIntegerField(default=1024)
    timeout_ms = models.PositiveIntegerField(default=5000)
    # Header whose value pins a caller to one version while the split is unchanged.
    sticky_header = models.CharField(max_length=64, blank=True, default="X-Routing-Key")
    # Prediction calls need an API key scoped to this endpoint; off only for open demos
    # and benchmarks (like a KServe server without auth).
    require_key = models.BooleanField(default=True)
    # Score each request against the serving version's reference statistics (robust
    # z-scores, Mahalanobis distance; inference/runtime/outliers.py) and count outliers.
    outlier_scoring = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Deployment(models.Model):
    """A model version placed behind an endpoint, with its role, weight and batching."""

    class Role(models.TextChoices):
        PRIMARY = "primary"
        CANARY = "canary"
        SHADOW = "shadow"

    class Device(models.TextChoices):
        CPU = "cpu"
        GPU = "gpu"

    class Placement(models.TextChoices):
        IN_PROCESS = "in_process", "inside the web processes"
        WORKER_POOL = "worker_pool", "on inference worker processes"

    class State(models.TextChoices):
        LOADING = "loading"
        READY = "ready"
        FAILED = "failed"
        RETIRED = "retired"

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deployments")
    model_version = models.ForeignKey("registry.ModelVersion", on_delete=models.PROTECT, related_name="deployments")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.PRIMARY)
    weight = models.PositiveSmallIntegerField(default=100)
    device = models.CharField(max_length=8, choices=Device.choices, default=Device.CPU)
    placement = models.CharField(max_length=16, choices=Placement.choices, default=Placement.IN_PROCESS)
    replicas = models.PositiveSmallIntegerField(default=1)
    max_batch_size = models.PositiveIntegerField(default=DEFAULT_MAX_BATCH_SIZE)
    max_queue_delay_ms = models.FloatField(default=DEFAULT_MAX_QUEUE_DELAY_MS)
    # Density (docs/serving.md): a pinned deployment stays loaded; the others may be unloaded
    # when a serving process's model-memory budget is full, and reload on their next request.
    pinned = models.BooleanField(default=False)
    state = models.CharField(max_length=16, choices=State.choices, default=State.LOADING)
    state_detail = models.TextField(blank=True)
    # The execution provider ONNX Runtime really gave the session (CPU when a GPU was asked
    # for and CUDA could not be used), as the runtime reported it.
    provider = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["endpoint__name", "role", "-weight"]

    def __str__(self) -> str:
        return f"{self.endpoint.name} -> {self.model_version} ({self.role} {self.weight}%)"


class TrafficPolicyRevision(models.Model):
    """Every change of an endpoint's split is a new revision; rollback = go back to N."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="revisions")
    revision = models.PositiveIntegerField()
    # [{"deployment": id, "model": name, "version": n, "role": ..., "weight": ...}, ...]
    routes = models.JSONField(default=list)
    comment = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    is_current = models.BooleanField(default=False)

    class Meta:
        ordering = ["endpoint__name", "-revision"]
        constraints = [models.UniqueConstraint(fields=["endpoint", "revision"], name="unique_revision_per_endpoint")]

    def __str__(self) -> str:
        return f"{self.endpoint.name} r{self.revision}"


class ApiKey(models.Model):
    """An application's key for prediction calls: hashed, scoped to endpoints, revocable."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, unique=True)
    hashed = models.CharField(max_length=64)
    endpoints = models.ManyToManyField(Endpoint, related_name="api_keys")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    @property
    def audit_team_id(self) -> int | None:
        """The team the audit log files this key's events under (audit.services).

        A key belongs to its endpoints' team (it is made for one endpoint and may reach
        others the same caller sees): its events are scoped like them.
        """
        if self.pk is None:
            return None
        return self.endpoints.exclude(team=None).values_list("team_id", flat=True).first()


class Rollout(models.Model):
    """A progressive rollout of a candidate version on an endpoint: a persisted state
    machine that beat advances (rollouts.services). `step` is the index of the plan step
    whose weight the candidate has now (-1 before the first); together with the row lock
    it makes every step happen at most once."""

    class State(models.TextChoices):
        RUNNING = "running"
        PAUSED = "paused"
        WAITING = "waiting", "waiting for an approver (confirmation or promotion) before 100 %"
        SUCCEEDED = "succeeded"
        ROLLED_BACK = "rolled_back"
        ABORTED = "aborted"

    ACTIVE = (State.RUNNING, State.PAUSED, State.WAITING)

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="rollouts")
    team = models.ForeignKey("accounts.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # The candidate is a model version or a pipeline version (a route {"pipeline", "version"}),
    # exactly one of the two.
    candidate = models.ForeignKey(
        "registry.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="rollouts"
    )
    candidate_pipeline = models.ForeignKey(
        "pipelines.PipelineVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="rollouts"
    )
    # The split when the rollout started: what a rollback restores.
    stable_routes = models.JSONField(default=list)
    plan = models.JSONField(default=dict)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING, db_index=True)
    step = models.IntegerField(default=-1)
    step_started_at = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveIntegerField(default=0)
    reason = models.TextField(blank=True)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    # Whether an approver started it (a Staging candidate may then be a production canary).
    approved_start = models.BooleanField(default=False)
    # The approver who confirmed the move to 100 % (plans with "confirm_full").
    confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint"],
                condition=models.Q(state__in=["running", "paused", "waiting"]),
                name="one_active_rollout_per_endpoint",
            ),
            models.CheckConstraint(
                condition=models.Q(candidate__isnull=False, candidate_pipeline__isnull=True)
                | models.Q(candidate__isnull=True, candidate_pipeline__isnull=False),
                name="rollout_one_candidate",
            ),
        ]

    def __str__(self) -> str:
        return f"rollout #{self.pk} of {self.endpoint.name}"

    @property
    def candidate_route(self) -> dict[str, Any]:
        """The candidate as a route names it: {"model", "version"} or {"pipeline", "version"}."""
        if self.candidate_pipeline_id is not None:
            return {"pipeline": self.candidate_pipeline.pipeline.name, "version": self.candidate_pipeline.version}
        return {"model": self.candidate.model.name, "version": self.candidate.version}

    @property
    def candidate_label(self) -> str:
        """The candidate's monitoring series: "iris:2", or "pipeline:fraud:3" for a pipeline."""
        route = self.candidate_route
        what = f"pipeline:{route['pipeline']}" if "pipeline" in route else route["model"]
        return f"{what}:{route['version']}"

    @property
    def candidate_name(self) -> str:
        """The candidate as people read it: "iris v2", "pipeline fraud v3"."""
        route = self.candidate_route
        what = f"pipeline {route['pipeline']}" if "pipeline" in route else route["model"]
        return f"{what} v{route['version']}"


class RolloutEvent(models.Model):
    """One line of a rollout's timeline: a step, an analysis with the values that decided
    it, a pause, a rollback ... (the audit log has the same decisions)."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="events")
    step = models.IntegerField()
    kind = models.CharField(max_length=32)
    detail = models.TextField(blank=True)
    analysis = models.JSONField(default=dict, blank=True)
    actor_name = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.rollout} step {self.step}: {self.kind}"
