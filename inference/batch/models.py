from __future__ import annotations

from django.conf import settings
from django.db import models


class BatchJob(models.Model):
    """A table scored by one model version; its chunks (BatchChunk) are the manifest."""

    class State(models.TextChoices):
        PLANNING = "planning"  # reading the input, splitting it into chunk files
        RUNNING = "running"
        FINALIZING = "finalizing"  # every chunk done: parts are being joined
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Format(models.TextChoices):
        CSV = "csv"
        PARQUET = "parquet"
        JSONL = "jsonl"

    class InputKind(models.TextChoices):
        UPLOAD = "upload"
        PATH = "path"

    class ErrorPolicy(models.TextChoices):
        SKIP = "skip"  # bad rows go to the errors file, up to max_error_pct of all rows
        FAIL = "fail"  # the first bad row fails the job

    class ChunksFrom(models.TextChoices):
        # The plan rewrote the input as Parquet chunk files (CSV, JSON Lines, and Parquet
        # whose row groups are larger than chunk_rows).
        FILES = "files"
        # Parquet: each chunk reads its own whole row groups of the input file; the plan
        # read only the footer.
        INPUT = "input"

    class Kind(models.TextChoices):
        SCORE = "score"  # one version scores the table
        COMPARE = "compare"  # two versions score the same rows; a diff report is written

    TERMINAL = (State.SUCCEEDED, State.FAILED, State.CANCELLED)

    team = models.ForeignKey("accounts.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    # The version that runs; empty for a pipeline job (pipeline_version below).
    model_version = models.ForeignKey(
        "registry.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="batch_jobs"
    )
    # A pipeline job (an endpoint whose primary is a pipeline): the pipeline version whose
    # graph runs over each chunk, and its model steps' versions as resolved when the job was
    # created ([{"model", "version", "stage", "sha256"}]): the lineage; a chunk refuses a
    # graph that resolves to other versions (a stage alias promoted meanwhile).
    pipeline_version = models.ForeignKey(
        "pipelines.PipelineVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="batch_jobs"
    )
    pipeline_models = models.JSONField(default=list, blank=True)
    # What the user asked for ("churn@production", "churn/3", "endpoint:fraud"), and the
    # digest that ran (empty for a pipeline job: pipeline_models has one per model step).
    model_ref = models.CharField(max_length=100)
    model_sha256 = models.CharField(max_length=64, blank=True)
    device = models.CharField(max_length=8, default="cpu")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.SCORE)
    # The endpoint whose current primary was resolved into model_version (when the job
    # named an endpoint rather than a version).
    endpoint = models.ForeignKey(
        "inference.Endpoint", null=True, blank=True, on_delete=models.SET_NULL, related_name="batch_jobs"
    )
    # compare: the second version ("b"), scored on the same rows as model_version ("a").
    compare_version = models.ForeignKey(
        "registry.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="compare_jobs"
    )
    compare_sha256 = models.CharField(max_length=64, blank=True)
    # compare: the diff report, written at finalize (services.compare_report).
    report = models.JSONField(default=dict, blank=True)
    # Execution providers ONNX Runtime really gave the chunks ("CPUExecutionProvider", ...).
    providers = models.JSONField(default=list, blank=True)
    # Why the job is where it is, when that is not obvious (waiting for a worker on its queue,
    # a GPU job that ran on CPU); empty otherwise.
    status_detail = models.TextField(blank=True)

    input_kind = models.CharField(max_length=8, choices=InputKind.choices)
    # upload: the store-relative path of the content-addressed copy; path: relative to
    # MODELHUB_BATCH_DATA_DIR (checked again whenever it is opened).
    input_path = models.CharField(max_length=1000)
    input_filename = models.CharField(max_length=255, blank=True)
    input_format = models.CharField(max_length=8, choices=Format.choices)
    input_sha256 = models.CharField(max_length=64, blank=True)
    input_size = models.BigIntegerField(default=0)
    # Where chunks read their rows (set by the plan), and for a path input read directly,
    # the file's size and mtime at planning ("size:mtime_ns"): a chunk refuses a file that
    # changed since, so the output matches the recorded input_sha256.
    chunks_from = models.CharField(max_length=8, choices=ChunksFrom.choices, default=ChunksFrom.FILES)
    input_stamp = models.CharField(max_length=64, blank=True)

    # {input name: [column, ...]}: the columns that feed each model input, in order.
    column_mapping = models.JSONField(default=dict)
    passthrough = models.JSONField(default=list)
    output_format = models.CharField(max_length=8, choices=Format.choices)
    chunk_rows = models.PositiveIntegerField()
    error_policy = models.CharField(max_length=8, choices=ErrorPolicy.choices, default=ErrorPolicy.SKIP)
    max_error_pct = models.FloatField(default=5.0)

    state = models.CharField(max_length=12, choices=State.choices, default=State.PLANNING, db_index=True)
    error = models.TextField(blank=True)
    rows_total = models.BigIntegerField(null=True, blank=True)
    rows_done = models.BigIntegerField(default=0)
    rows_failed = models.BigIntegerField(default=0)
    chunks_total = models.PositiveIntegerField(default=0)
    # Columns of the result, in order (known once the first chunk has run).
    output_columns = models.JSONField(default=list, blank=True)
    result_sha256 = models.CharField(max_length=64, blank=True)
    result_size = models.BigIntegerField(default=0)
    errors_sha256 = models.CharField(max_length=64, blank=True)
    # Bad rows found while reading the input (unparseable lines), before any chunk ran.
    plan_failed_rows = models.BigIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_progress_at = models.DateTimeField(null=True, blank=True)
    # Seconds spent running before the last resume, so rows/s ignores the pause.
    active_seconds_before = models.FloatField(default=0.0)
    files_deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"batch job #{self.pk} ({self.model_ref})"

    @property
    def is_terminal(self) -> bool:
        return self.state in self.TERMINAL


class BatchChunk(models.Model):
    """One row range of a job: claimed under a lease, run, its part renamed into place."""

    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"

    job = models.ForeignKey(BatchJob, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    row_start = models.BigIntegerField()
    row_count = models.PositiveIntegerField()
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires = models.DateTimeField(null=True, blank=True, db_index=True)
    worker = models.CharField(max_length=200, blank=True)
    rows_done = models.PositiveIntegerField(default=0)
    rows_failed = models.PositiveIntegerField(default=0)
    part_size = models.BigIntegerField(default=0)
    # The execution provider the chunk's session really had, and (compare jobs) its partial
    # diff statistics, summed by finalize.
    provider = models.CharField(max_length=64, blank=True)
    stats = models.JSONField(default=dict, blank=True)
    last_error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(default=0.0)

    class Meta:
        ordering = ["job", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="one_chunk_per_job_and_index")]

    def __str__(self) -> str:
        return f"chunk {self.index} of job #{self.job_id}"
