from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework import serializers

from inference.batch import selectors
from inference.batch.models import BatchChunk, BatchJob


class BatchChunkSerializer(serializers.ModelSerializer):
    class Meta:
        model = BatchChunk
        fields = [
            "index",
            "row_start",
            "row_count",
            "state",
            "attempts",
            "worker",
            "lease_expires",
            "rows_done",
            "rows_failed",
            "seconds",
            "provider",
            "last_error",
        ]


class BatchJobSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model_version.model.name", read_only=True, allow_null=True)
    version = serializers.IntegerField(source="model_version.version", read_only=True, allow_null=True)
    pipeline = serializers.SerializerMethodField()
    team = serializers.SlugRelatedField(slug_field="name", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    progress = serializers.SerializerMethodField()
    input = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()
    errors_file = serializers.SerializerMethodField()
    endpoint = serializers.SlugRelatedField(slug_field="name", read_only=True)
    compare = serializers.SerializerMethodField()

    class Meta:
        model = BatchJob
        fields = [
            "id",
            "state",
            "error",
            "team",
            "created_by",
            "model",
            "version",
            "model_ref",
            "model_sha256",
            "pipeline",
            "kind",
            "endpoint",
            "compare",
            "report",
            "device",
            "providers",
            "status_detail",
            "input",
            "column_mapping",
            "passthrough",
            "output_format",
            "output_columns",
            "chunk_rows",
            "error_policy",
            "max_error_pct",
            "rows_total",
            "rows_done",
            "rows_failed",
            "chunks_total",
            "progress",
            "result",
            "errors_file",
            "created_at",
            "started_at",
            "finished_at",
            "files_deleted_at",
        ]

    def get_pipeline(self, job: BatchJob) -> dict[str, Any] | None:
        """A pipeline job (model and version are null): the pipeline version that ran, and the
        model versions its steps resolved to when the job was created (lineage)."""
        found = job.pipeline_version
        if found is None:
            return None
        return {"pipeline": found.pipeline.name, "version": found.version, "models": job.pipeline_models}

    def get_compare(self, job: BatchJob) -> dict[str, Any] | None:
        """compare jobs: the second version ("b"; model/version above are "a")."""
        other = job.compare_version
        if other is None:
            return None
        return {"model": other.model.name, "version": other.version, "sha256": job.compare_sha256}

    def get_progress(self, job: BatchJob) -> dict[str, Any]:
        return selectors.job_progress(job)

    def get_input(self, job: BatchJob) -> dict[str, Any]:
        return {
            "kind": job.input_kind,
            "path": job.input_path if job.input_kind == BatchJob.InputKind.PATH else None,
            "filename": job.input_filename,
            "format": job.input_format,
            "sha256": job.input_sha256 or None,
            "size": job.input_size,
        }

    def get_result(self, job: BatchJob) -> dict[str, Any] | None:
        if not job.result_sha256 or job.files_deleted_at:
            return None
        return {
            "url": reverse("batch-job-result", args=[job.pk]),
            "format": job.output_format,
            "sha256": job.result_sha256,
            "size": job.result_size,
        }

    def get_errors_file(self, job: BatchJob) -> dict[str, Any] | None:
        if not job.errors_sha256 or job.files_deleted_at:
            return None
        return {"url": reverse("batch-job-errors", args=[job.pk]), "sha256": job.errors_sha256, "rows": job.rows_failed}


class BatchJobDetailSerializer(BatchJobSerializer):
    chunks = BatchChunkSerializer(many=True, read_only=True)

    class Meta(BatchJobSerializer.Meta):
        fields = [*BatchJobSerializer.Meta.fields, "chunks"]


class BatchJobCreateSerializer(serializers.Serializer):
    """The request: JSON (with input_path) or multipart (with an input file)."""

    model = serializers.CharField(
        required=False, help_text="a model name (with version), or name@production / name@staging"
    )
    version = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    endpoint = serializers.CharField(required=False, help_text="instead of model: the endpoint's current primary")
    pipeline = serializers.CharField(required=False, help_text="not supported yet (400)")
    compare_model = serializers.CharField(
        required=False, help_text="compare job: the second version's model (default: model), or an alias"
    )
    compare_version = serializers.IntegerField(required=False, min_value=1, help_text="compare job: its version")
    tolerance = serializers.FloatField(
        required=False, min_value=0.0, help_text="compare job: |a - b| up to this counts as agreement (1e-6)"
    )
    input = serializers.FileField(required=False, help_text="the table to score (multipart)")
    input_path = serializers.CharField(required=False, help_text="a file inside MODELHUB_BATCH_DATA_DIR")
    input_format = serializers.ChoiceField(choices=BatchJob.Format.choices, required=False)
    output_format = serializers.ChoiceField(choices=BatchJob.Format.choices, required=False)
    column_mapping = serializers.JSONField(required=False, help_text='{"input": ["col", ...]}')
    passthrough = serializers.JSONField(help_text='columns copied to the output, a key at least: ["id"]')
    chunk_rows = serializers.IntegerField(required=False, min_value=1)
    error_policy = serializers.ChoiceField(choices=BatchJob.ErrorPolicy.choices, required=False)
    max_error_pct = serializers.FloatField(required=False, min_value=0.0, max_value=100.0)
    device = serializers.ChoiceField(choices=[("cpu", "cpu"), ("gpu", "gpu")], required=False)
    dry_run = serializers.BooleanField(required=False, default=False)
    dry_run_rows = serializers.IntegerField(required=False, min_value=1)


class CompareAttachSerializer(serializers.Serializer):
    promotion_request = serializers.IntegerField(min_value=1, help_text="a pending promotion request's id")
