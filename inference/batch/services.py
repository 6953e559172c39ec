"""Batch job rules: create (and dry-run), plan, run chunks, finalize, cancel, resume, sweep.

A job's life: PLANNING (the input is read once and split into Parquet chunk files) ->
RUNNING (each chunk is claimed under a lease, run, its part renamed into place, and
marked done in the manifest exactly once) -> FINALIZING (parts joined in order) ->
SUCCEEDED. FAILED and CANCELLED can be resumed; chunks already done are kept.

Lock order: the job row, then its chunk rows. Every step is safe to run twice: a step
checks the state it expects under the lock and does nothing otherwise.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.services import audit_record
from config.errors import Conflict, DomainError, PayloadTooLarge
from config.queue import app as celery_app
from config.queue import enqueue
from inference.batch import compare, executor, storage, tables
from inference.batch import pipeline as batch_pipeline
from inference.batch.models import BatchChunk, BatchJob
from inference.batch.runner import LocalRunner
from inference.environments import ENVIRONMENT_RULES, EnvironmentRuleBroken, version_allowed
from inference.models import Deployment, Endpoint
from inference.pipelines.features import UnknownEntity
from inference.pipelines.graph import CompiledPipeline, GraphError
from inference.pipelines.models import PipelineVersion
from inference.pipelines.services import compile_version, pipeline_version_get
from inference.runtime.errors import InputError, ModelExecutionError
from inference.runtime.signature import Signature
from inference.selectors import endpoint_for_user_or_404, revision_current
from registry import selectors as registry_selectors
from registry.evidence import promotion_evidence_attach
from registry.models import ModelVersion, PromotionRequest
from registry.storage import StagedArtifact

log = logging.getLogger(__name__)

_ALIASES = {"production": ModelVersion.Stage.PRODUCTION, "staging": ModelVersion.Stage.STAGING}


class BatchInputError(DomainError):
    code = "invalid_batch_input"


class VersionNotReady(Conflict):
    code = "version_not_ready"


class JobStateConflict(Conflict):
    code = "invalid_transition"


class NoPrimary(Conflict):
    code = "no_primary"


class _RowError(Exception):
    """A bad row under error_policy=fail, the model failing on rows it accepted, or an input
    read directly by the chunks that is gone or changed: the job fails, no retry helps."""


class _Stop(Exception):
    """A running chunk stops: the job was cancelled or failed, or its lease was taken."""


@dataclass(frozen=True)
class JobRequest:
    """What a user asked for, parsed but not yet checked against the model or the file."""

    model: str = ""
    version: int | None = None
    # Instead of model/version: the endpoint whose current primary version runs.
    endpoint: str = ""
    # compare jobs: the second version ("b"), scored beside model/version ("a").
    compare_model: str = ""
    compare_version: int | None = None
    tolerance: float = 1e-6
    input_format: str | None = None
    output_format: str | None = None
    column_mapping: Mapping[str, Any] | None = None
    passthrough: Sequence[str] = ()
    chunk_rows: int | None = None
    error_policy: str = BatchJob.ErrorPolicy.SKIP
    max_error_pct: float = 5.0
    device: str = "cpu"
    dry_run_rows: int = 100
    extra: dict[str, Any] = field(default_factory=dict)


# --- what to run ------------------------------------------------------------------------------


def model_version_resolve(*, model: str, version: int | None, user: Any) -> ModelVersion:
    """The version a job runs: `name` + `version`, or `name@production` / `name@staging`.

    Another team's model is not found; a version that is not ready is a 409.
    """
    if "@" in model:
        name, alias = model.split("@", 1)
        stage = _ALIASES.get(alias.lower())
        if stage is None:
            raise BatchInputError(f"model: unknown alias @{alias}; use @production or @staging")
        if version is not None:
            raise BatchInputError("give either a version or a stage alias, not both")
        found_model = registry_selectors.model_get(name=name, user=user)
        found = found_model.versions.select_related("model").filter(stage=stage).order_by("-version").first()
        if found is None:
            raise VersionNotReady(f"model {name!r} has no version in {stage}")
    else:
        if version is None:
            raise BatchInputError("version: required (or name a stage alias such as model@production)")
        found = registry_selectors.version_get(model_name=model, version=version, user=user)
    _ready_check(found)
    return found


@dataclass(frozen=True)
class Target:
    """What a job runs: the version (or, for an endpoint serving a pipeline, the pipeline
    version and its compiled graph), how it was named, and the endpoint it came from."""

    version: ModelVersion | None
    ref: str
    endpoint: Endpoint | None = None
    pipeline: PipelineVersion | None = None
    graph: CompiledPipeline | None = None

    @property
    def signature(self) -> Signature:
        if self.graph is not None:
            return batch_pipeline.signature(self.graph)
        assert self.version is not None
        return _signature(self.version)

    @property
    def model(self) -> ModelVersion:
        """The version of a model target (a pipeline target has none: callers check first)."""
        assert self.version is not None, "a pipeline target has no model version"
        return self.version


def endpoint_primary_resolve(*, endpoint: str, user: Any) -> Target:
    """The endpoint's current primary version, if the endpoint's environment allows it.

    Team-scoped twice: an endpoint the user may not see is a 404, and so is a primary whose
    model the user may not see. The environment rule is the one the traffic split obeys
    (inference.environments.version_allowed), checked again here because a stage may have
    changed since the split was written.
    """
    found: Endpoint = endpoint_for_user_or_404(user, endpoint)
    revision = revision_current(endpoint=found)
    primaries = [r for r in (revision.routes if revision else []) if r.get("role") == Deployment.Role.PRIMARY]
    if not primaries:
        raise NoPrimary(f'endpoint "{found.name}" has no primary version to run (no traffic split yet)')
    route = max(primaries, key=lambda r: int(r.get("weight") or 0))
    if route.get("pipeline"):
        return _endpoint_pipeline_resolve(found, route)
    version = registry_selectors.version_get(model_name=route["model"], version=int(route["version"]), user=user)
    if not version_allowed(environment=found.environment, stage=version.stage, role=Deployment.Role.PRIMARY):
        raise EnvironmentRuleBroken(
            f"{version} is in {version.stage}, so it cannot run as the primary of {found.environment} endpoint "
            f'"{found.name}": {ENVIRONMENT_RULES[found.environment]}',
            details={
                "model": version.model.name,
                "version": version.version,
                "stage": version.stage,
                "environment": found.environment,
            },
        )
    _ready_check(version)
    return Target(version, f"endpoint:{found.name}"[:100], found)


def _endpoint_pipeline_resolve(endpoint: Endpoint, route: Mapping[str, Any]) -> Target:
    """The pipeline an endpoint serves as its primary, under the same rules as its split:
    the graph checks now, and every model step obeys the endpoint's environment (a
    pipeline has no stage of its own; traffic._pipeline_routes_check is the online side)."""
    where = f'endpoint "{endpoint.name}"'
    try:
        found = pipeline_version_get(
            name=route["pipeline"], version=route["version"], team_id=endpoint.team_id, where=where
        )
        graph = compile_version(found)
        batch_pipeline.batch_check(graph)
    except GraphError as exc:
        raise BatchInputError(
            f"{where}: pipeline {route['pipeline']}:{route['version']} no longer checks: {exc.message}"
        ) from None
    except batch_pipeline.PipelineRefused as exc:
        raise BatchInputError(str(exc)) from None
    for ref in graph.models():
        if not version_allowed(environment=endpoint.environment, stage=ref.stage, role=Deployment.Role.PRIMARY):
            raise EnvironmentRuleBroken(
                f"pipeline {found} uses {ref.label}, which is in {ref.stage}, so it cannot run as the primary of "
                f'{endpoint.environment} endpoint "{endpoint.name}": {ENVIRONMENT_RULES[endpoint.environment]}',
                details={
                    "pipeline": found.pipeline.name,
                    "model": ref.model,
                    "version": ref.version,
                    "stage": ref.stage,
                    "environment": endpoint.environment,
                },
            )
    return Target(None, f"endpoint:{endpoint.name}"[:100], endpoint, pipeline=found, graph=graph)


def target_resolve(*, request: JobRequest, user: Any) -> Target:
    """A model version, a stage alias, or an endpoint's current primary (a version or a pipeline)."""
    if request.extra.get("pipeline"):
        raise BatchInputError(
            'pipeline: name the endpoint that serves it ("endpoint"): a pipeline runs as a batch job under its '
            "endpoint's rules; or name a model version or a stage alias"
        )
    if request.endpoint:
        if request.model or request.version is not None:
            raise BatchInputError("give either an endpoint or a model (with version or alias), not both")
        return endpoint_primary_resolve(endpoint=request.endpoint, user=user)
    if not request.model:
        raise BatchInputError("model: required (a model name with version, name@production), or an endpoint")
    version = model_version_resolve(model=request.model, version=request.version, user=user)
    ref = request.model if "@" in request.model else f"{version.model.name}/{version.version}"
    return Target(version, ref)


def compare_target_resolve(*, request: JobRequest, first: ModelVersion, user: Any) -> Target | None:
    """The second version of a compare job (None for a plain job): same grammar as `model`;
    a bare compare_version means another version of the first one's model."""
    if not request.compare_model and request.compare_version is None:
        return None
    name = request.compare_model or first.model.name
    version = model_version_resolve(model=name, version=request.compare_version, user=user)
    if version.pk == first.pk:
        raise BatchInputError(f"compare: {version} is the version being compared against; name another one")
    ref = name if "@" in name else f"{version.model.name}/{version.version}"
    return Target(version, ref)


def _ready_check(version: ModelVersion) -> None:
    if version.status != ModelVersion.Status.READY:
        raise VersionNotReady(
            f"{version} is {version.status}; a batch job needs a ready (validated) version",
            details={"status": version.status},
        )


def _signature(version: ModelVersion) -> Signature:
    return Signature.from_dict(version.signature)


# --- columns ----------------------------------------------------------------------------------


def column_mapping_resolve(
    *,
    signature: Signature,
    metadata: Mapping[str, Any],
    columns: Sequence[str],
    mapping: Mapping[str, Any] | None,
    passthrough: Sequence[str],
) -> dict[str, list[str]]:
    """{input: [column, ...]}: the given mapping checked, or the default one.

    Default: a single 2-D input takes the version's `feature_names` metadata (the
    signature's feature order) when the file has those columns, else every column that
    is not passed through, in file order, when their number fits; inputs of width 1
    take the column of the same name.
    """
    available = set(columns)
    for name in passthrough:
        if name not in available:
            raise BatchInputError(f'passthrough: the input has no column "{name}"', details={"columns": list(columns)})
    for spec in signature.inputs:
        try:
            tables.input_width(spec)
        except ValueError as exc:
            raise BatchInputError(str(exc)) from None
    if mapping is None:
        mapping = _default_mapping(signature, metadata, columns, passthrough)
    resolved: dict[str, list[str]] = {}
    for name, value in mapping.items():
        if not signature.has_input(name):
            known = list(signature.input_names)
            raise BatchInputError(f'column_mapping: the model has no input "{name}"; inputs are {known}')
        cols = [value] if isinstance(value, str) else value
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
            raise BatchInputError(f'column_mapping["{name}"]: expected a column name or a list of them')
        missing = [c for c in cols if c not in available]
        if missing:
            raise BatchInputError(
                f'column_mapping["{name}"]: the input has no column "{missing[0]}"',
                details={"missing": missing, "columns": list(columns)},
            )
        spec = signature.input(name)
        width = tables.input_width(spec)
        if width is not None and len(cols) != width:
            raise BatchInputError(
                f'column_mapping["{name}"]: input "{name}" is {spec.describe()}: expected {width} columns, '
                f"got {len(cols)}"
            )
        resolved[name] = list(cols)
    unmapped = [name for name in signature.input_names if name not in resolved]
    if unmapped:
        raise BatchInputError(f'column_mapping: no columns for input "{unmapped[0]}"')
    return resolved


def _default_mapping(
    signature: Signature, metadata: Mapping[str, Any], columns: Sequence[str], passthrough: Sequence[str]
) -> dict[str, Any]:
    inputs = signature.inputs
    rest = [c for c in columns if c not in set(passthrough)]
    if len(inputs) == 1 and inputs[0].rank == 2 and tables.input_width(inputs[0]) != 1:
        spec = inputs[0]
        width = tables.input_width(spec)
        names = metadata.get("feature_names")
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            if set(names) <= set(columns):
                return {spec.name: list(names)}
            missing = [n for n in names if n not in set(columns)]
            raise BatchInputError(
                f'the input has no column "{missing[0]}" (the model\'s features are {names})',
                details={"missing": missing, "columns": list(columns)},
            )
        if width is None or len(rest) == width:
            return {spec.name: rest}
        raise BatchInputError(
            f'column_mapping: required: input "{spec.name}" is {spec.describe()} and the file has {len(rest)} '
            "columns that are not passed through",
            details={"columns": list(columns)},
        )
    if all(name in set(columns) for name in signature.input_names):
        return {name: [name] for name in signature.input_names}
    raise BatchInputError(
        f"column_mapping: required: the file's columns do not name the model's inputs {list(signature.input_names)}",
        details={"columns": list(columns)},
    )


# --- create and dry run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Checked:
    target: Target
    compare: Target | None
    path: Path
    fmt: str
    output_format: str
    mapping: dict[str, list[str]]
    passthrough: list[str]
    chunk_rows: int


def _check(*, request: JobRequest, user: Any, path: Path, filename: str, size: int) -> _Checked:
    """Every check a job gets before it is accepted: cheap, reads only the file's start."""
    target = target_resolve(request=request, user=user)
    if target.graph is not None and (request.compare_model or request.compare_version is not None):
        raise BatchInputError("compare: a compare job scores two model versions; a pipeline cannot be compared")
    second = (
        None if target.graph is not None else compare_target_resolve(request=request, first=target.model, user=user)
    )
    fmt = request.input_format or tables.format_from_name(filename)
    if fmt is None:
        raise BatchInputError(
            f"input_format: required: cannot tell the format from {filename!r}; one of {', '.join(tables.FORMATS)}"
        )
    if fmt not in tables.FORMATS:
        raise BatchInputError(f"input_format: expected one of {', '.join(tables.FORMATS)}, got {fmt!r}")
    output_format = request.output_format or fmt
    if output_format not in tables.FORMATS:
        raise BatchInputError(f"output_format: expected one of {', '.join(tables.FORMATS)}, got {output_format!r}")
    if size > settings.BATCH_MAX_INPUT_BYTES:
        raise PayloadTooLarge(f"the input is larger than the limit of {settings.BATCH_MAX_INPUT_BYTES} bytes")
    if size == 0:
        raise BatchInputError("the input file is empty")
    chunk_rows = request.chunk_rows or settings.BATCH_CHUNK_ROWS
    if not 1 <= chunk_rows <= settings.BATCH_MAX_CHUNK_ROWS:
        raise BatchInputError(
            f"chunk_rows: expected 1 to {settings.BATCH_MAX_CHUNK_ROWS} (a chunk must finish well inside the "
            f"queue's visibility timeout), got {chunk_rows}"
        )
    if request.error_policy not in BatchJob.ErrorPolicy.values:
        raise BatchInputError(f"error_policy: expected skip or fail, got {request.error_policy!r}")
    if not 0.0 <= request.max_error_pct <= 100.0:
        raise BatchInputError(f"max_error_pct: expected 0 to 100, got {request.max_error_pct}")
    if request.device not in ("cpu", "gpu"):
        raise BatchInputError(f"device: expected cpu or gpu, got {request.device!r}")
    if not 0.0 <= request.tolerance < float("inf"):
        raise BatchInputError(f"tolerance: expected a number >= 0, got {request.tolerance}")
    passthrough = list(request.passthrough)
    if not passthrough:
        raise BatchInputError("passthrough: name at least one column (a key) to copy to the output")
    # error_policy=skip: a CSV row with bytes that are not UTF-8 goes to the errors file
    # (tables.split_into_chunks); fail: such a file is refused as a whole.
    replace = request.error_policy == BatchJob.ErrorPolicy.SKIP
    try:
        columns = tables.column_names(path, fmt, replace=replace)
        first = tables.head(path, fmt, rows=1, replace=replace)
    except tables.TableFormatError as exc:
        raise BatchInputError(f"input: {exc}") from None
    if first.num_rows == 0:
        raise BatchInputError("the input has no rows")
    mapping = column_mapping_resolve(
        signature=target.signature,
        metadata=target.version.metadata or {} if target.version is not None else {},
        columns=columns,
        mapping=request.column_mapping,
        passthrough=passthrough,
    )
    if second is not None:
        try:
            compare.signatures_check(target.signature, _signature(second.model), mapping)
        except ValueError as exc:
            raise BatchInputError(f"compare: {exc}") from None
    return _Checked(target, second, path, fmt, output_format, mapping, passthrough, chunk_rows)


def job_dry_run(*, request: JobRequest, user: Any, path: Path, filename: str, size: int) -> dict[str, Any]:
    """Check the first N rows against the signature and run the model on them; nothing is kept."""
    checked = _check(request=request, user=user, path=path, filename=filename, size=size)
    rows = max(1, min(request.dry_run_rows, settings.BATCH_DRY_RUN_MAX_ROWS))
    columns = _needed_columns(checked.mapping, checked.passthrough)
    replace = checked.fmt == "csv" and request.error_policy == BatchJob.ErrorPolicy.SKIP
    try:
        table = tables.head(path, checked.fmt, rows=rows, columns=columns, replace=replace)
    except tables.TableFormatError as exc:
        raise BatchInputError(f"input: {exc}") from None
    not_utf8: list[tables.BadRow] = []
    if replace:
        # Row numbers kept beside the rows, so that bad values after a dropped row keep theirs.
        table = table.append_column(tables.ROW_COLUMN, pa.array(np.arange(table.num_rows, dtype=np.int64)))
        mask, found = tables.replaced_rows(table, columns)
        not_utf8 = [tables.BadRow(position, column, tables.NOT_UTF8_ROW) for position, column in found]
        table = table.filter(pa.array(~mask))  # as the plan does: those rows never reach a chunk
    target = checked.target
    feeds, good, bad = tables.model_feeds(table, checked.mapping, target.signature)
    bad = sorted([*not_utf8, *bad], key=lambda b: b.row or 0)
    output_columns: list[str] = []
    sample: list[dict[str, Any]] = []
    if good.any():
        try:
            if target.graph is not None:
                outputs, _ = batch_pipeline.run(
                    target.graph, feeds, device=request.device, infer_rows=settings.BATCH_INFER_ROWS, between=_nothing
                )
            else:
                version = target.model
                model = executor.model_for(
                    sha256=version.artifact_sha256,
                    name=version.model.name,
                    version=str(version.version),
                    device=request.device,
                )
                outputs = model.predict(feeds)
        except (InputError, ModelExecutionError, UnknownEntity) as exc:
            raise BatchInputError(f"the model failed on the first rows: {exc}") from None
        result = _result_table(table.filter(pa.array(good)), checked.passthrough, outputs)
        output_columns = result.column_names
        sample = result.slice(0, 5).to_pylist()
    what: dict[str, Any] = {}
    if target.pipeline is not None and target.graph is not None:
        what["pipeline_version"] = {"pipeline": target.pipeline.pipeline.name, "version": target.pipeline.version}
        what["pipeline_models"] = batch_pipeline.lineage(target.graph)
    else:
        what["model_version"] = {"model": target.model.model.name, "version": target.model.version}
    return {
        "dry_run": True,
        "ok": not bad,
        **what,
        "model_ref": checked.target.ref,
        "rows_checked": table.num_rows,
        "bad_rows": len(bad),
        "errors": [{"row": b.row, "column": b.column, "reason": b.reason} for b in bad[:20]],
        "column_mapping": checked.mapping,
        "passthrough": checked.passthrough,
        "output_columns": output_columns,
        "sample": sample,
    }


def _nothing() -> None:
    return None


def _needed_columns(mapping: Mapping[str, Sequence[str]], passthrough: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for name in passthrough:
        seen[name] = None
    for cols in mapping.values():
        for name in cols:
            seen[name] = None
    return list(seen)


def job_create(
    *,
    request: JobRequest,
    user: Any,
    upload: StagedArtifact | None = None,
    input_path: str = "",
    source_ip: str | None = None,
) -> BatchJob:
    """Accept a job (the upload is moved into the batch store) and queue its planning."""
    try:
        if upload is not None:
            path, filename, size = upload.tmp_path, upload.filename, upload.size
        else:
            path = storage.data_path_resolve(input_path)
            filename, size = path.name, path.stat().st_size
        checked = _check(request=request, user=user, path=path, filename=filename, size=size)
        if upload is not None:
            kind, stored = BatchJob.InputKind.UPLOAD, storage.input_commit(upload, checked.fmt)
            sha256 = upload.sha256
        else:
            kind, stored, sha256 = BatchJob.InputKind.PATH, input_path, ""
    except BaseException:
        if upload is not None:
            upload.discard()
        raise
    target, second = checked.target, checked.compare
    version, ref = target.version, target.ref
    if target.pipeline is not None and target.graph is not None:
        team_id = target.pipeline.pipeline.team_id
        lineage = batch_pipeline.lineage(target.graph)
    else:
        team_id, lineage = target.model.model.team_id, []
    queue = _queue_for(request.device)
    with transaction.atomic():
        job = BatchJob.objects.create(
            team_id=team_id,
            created_by=user if getattr(user, "is_authenticated", False) else None,
            model_version=version,
            model_ref=ref,
            model_sha256=version.artifact_sha256 if version is not None else "",
            pipeline_version=target.pipeline,
            pipeline_models=lineage,
            endpoint=checked.target.endpoint,
            kind=BatchJob.Kind.COMPARE if second else BatchJob.Kind.SCORE,
            compare_version=second.version if second else None,
            compare_sha256=second.version.artifact_sha256 if second else "",
            report={"tolerance": request.tolerance} if second else {},
            status_detail="" if celery_app.conf.task_always_eager else f"queued on {queue}, waiting for a worker",
            device=request.device,
            input_kind=kind,
            input_path=stored,
            input_filename=filename,
            input_format=checked.fmt,
            input_sha256=sha256,
            input_size=size,
            column_mapping=checked.mapping,
            passthrough=checked.passthrough,
            output_format=checked.output_format,
            chunk_rows=checked.chunk_rows,
            error_policy=request.error_policy,
            max_error_pct=request.max_error_pct,
        )
        audit_record(
            actor=user,
            action="batch_job.create",
            obj=job,
            after={
                "model": ref,
                "model_sha256": job.model_sha256,
                "pipeline": str(target.pipeline) if target.pipeline is not None else None,
                "pipeline_models": lineage or None,
                "compare_to": second.ref if second else None,
                "input": filename,
                "input_sha256": sha256,
            },
            source_ip=source_ip,
        )
        transaction.on_commit(lambda: _dispatch("plan", job.pk))
    return job


# --- dispatch -----------------------------------------------------------------------------------


def _job_drive(job_id: int) -> None:
    """The embedded runner's loop for one job: plan, every chunk in order, finalize."""
    while True:
        job = BatchJob.objects.filter(pk=job_id).first()
        if job is None or job.is_terminal:
            return
        if job.state == BatchJob.State.PLANNING:
            job_plan(job_id=job_id)
        elif job.state == BatchJob.State.FINALIZING:
            job_finalize(job_id=job_id)
        else:
            now = timezone.now()
            chunk = (
                job.chunks.filter(
                    Q(state=BatchChunk.State.PENDING) | Q(state=BatchChunk.State.RUNNING, lease_expires__lt=now)
                )
                .order_by("index")
                .first()
            )
            if chunk is None:
                # A chunk still leased by a process that died: the sweep submits the job again.
                return
            chunk_run(job_id=job_id, index=chunk.index)


RUNNER = LocalRunner(_job_drive)


def _queue_for(device: str) -> str:
    """device=gpu jobs run every step on the GPU workers' queue; the rest on the batch queue."""
    return settings.BATCH_GPU_QUEUE if device == "gpu" else settings.BATCH_QUEUE


def _dispatch(kind: str, job_id: int, indexes: Sequence[int] = (), *, countdown: float | None = None) -> None:
    """Queue the next step: Celery tasks on the job's queue, or the embedded runner thread."""
    if celery_app.conf.task_always_eager:
        RUNNER.submit(job_id)
        return
    try:
        device = BatchJob.objects.filter(pk=job_id).values_list("device", flat=True).first() or "cpu"
        queue = _queue_for(device)
        if kind == "chunk":
            for index in indexes:
                enqueue("batch.chunk_run", args=[job_id, index], queue=queue, countdown=countdown)
        elif kind == "plan":
            enqueue("batch.job_plan", args=[job_id], queue=queue, countdown=countdown)
        else:
            enqueue("batch.job_finalize", args=[job_id], queue=queue, countdown=countdown)
    except Exception:
        # The job's state is in PostgreSQL: the sweep queues what is stalled again.
        log.exception("batch job %s: could not queue %s; the sweep will retry", job_id, kind)


# --- plan ----------------------------------------------------------------------------------------


def job_plan(*, job_id: int) -> str:
    """Plan the chunks and write the manifest; then queue the chunks.

    A Parquet input whose row groups fit in `chunk_rows` is planned from its footer alone:
    each chunk is a run of whole row groups that the chunk reads from the input itself.
    Any other input is read once into Parquet chunk files (CSV and JSON Lines must be
    parsed to find their rows; a row group larger than a chunk would be decoded by every
    chunk cut from it).
    """
    job = BatchJob.objects.select_related("model_version").get(pk=job_id)
    if job.state != BatchJob.State.PLANNING:
        return f"job is {job.state}"
    bad_lines: list[tables.BadRow] = []

    def on_bad_line(reason: str) -> None:
        if job.error_policy == BatchJob.ErrorPolicy.FAIL:
            raise tables.TableFormatError(f"{reason} (error_policy is fail)")
        bad_lines.append(tables.BadRow(None, "", reason))

    folder = storage.chunks_dir(job.pk)
    building = folder.with_name(f"chunks.{uuid.uuid4().hex}.tmp")
    columns = _needed_columns(job.column_mapping, job.passthrough)
    chunks_from, stamp = BatchJob.ChunksFrom.FILES, ""
    try:
        path = storage.input_file(job.input_kind, job.input_path)
        sha256, size = (job.input_sha256, job.input_size)
        ranges = None
        if job.input_format == "parquet":
            ranges = tables.parquet_row_group_chunks(path, job.chunk_rows)
        if job.input_kind == BatchJob.InputKind.PATH:
            # A path input can change under the job: the digest and the stamp that chunks
            # reading the file itself check are taken together, and must agree.
            stamp = tables.file_stamp(path)
            sha256, size = storage.file_sha256(path)
            if tables.file_stamp(path) != stamp:
                raise tables.TableFormatError("the input file changed while it was being read; start the job again")
        if ranges is not None:
            present = set(tables.column_names(path, "parquet"))
            missing = [name for name in columns if name not in present]
            if missing:
                raise tables.TableFormatError(f"the input has no column {missing[0]!r} any more")
            chunks_from = BatchJob.ChunksFrom.INPUT
            counts = [count for _, count in ranges]
        else:
            counts = tables.split_into_chunks(
                path,
                job.input_format,
                columns=columns,
                chunk_rows=job.chunk_rows,
                out_dir=building,
                on_bad_line=on_bad_line,
                on_bad_row=bad_lines.append if job.error_policy == BatchJob.ErrorPolicy.SKIP else None,
            )
            if bad_lines:
                tables.errors_part(bad_lines, storage.plan_errors_path(job.pk))
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(building, folder)
    except (tables.TableFormatError, DomainError, OSError, pa.ArrowException) as exc:
        shutil.rmtree(building, ignore_errors=True)
        message = exc.message if isinstance(exc, DomainError) else str(exc)
        job_fail(job_id=job.pk, reason=f"reading the input failed: {message}", expect=BatchJob.State.PLANNING)
        return "failed"
    finally:
        tables.memory_release()  # the plan read the whole input: keep none of it for the chunks
    with transaction.atomic():
        job = BatchJob.objects.select_for_update().get(pk=job_id)
        if job.state != BatchJob.State.PLANNING:
            return f"job is {job.state}"
        start = 0
        chunks = []
        for index, count in enumerate(counts):
            chunks.append(BatchChunk(job=job, index=index, row_start=start, row_count=count))
            start += count
        job.chunks.all().delete()
        BatchChunk.objects.bulk_create(chunks)
        now = timezone.now()
        job.rows_total = start + len(bad_lines)
        job.rows_failed = job.plan_failed_rows = len(bad_lines)
        job.chunks_total = len(chunks)
        job.input_sha256, job.input_size = sha256, size
        job.chunks_from = chunks_from
        job.input_stamp = stamp if chunks_from == BatchJob.ChunksFrom.INPUT else ""
        job.started_at = job.last_progress_at = now
        job.state = BatchJob.State.RUNNING
        job.status_detail = ""
        fields = ["rows_total", "rows_failed", "plan_failed_rows", "chunks_total", "input_sha256", "input_size"]
        fields += ["chunks_from", "input_stamp"]
        job.save(update_fields=[*fields, "started_at", "last_progress_at", "state", "status_detail"])
        if not chunks:
            _fail_locked(job, "the input has no readable rows")
            return "failed"
        if _over_error_budget(job):
            return "failed"
        indexes = [c.index for c in chunks]
        transaction.on_commit(lambda: _dispatch("chunk", job_id, indexes))
    return f"planned {len(chunks)} chunks"


def _over_error_budget(job: BatchJob) -> bool:
    """Fail a locked job whose failed rows passed its threshold; True if it did."""
    total = job.rows_total or 0
    if job.rows_failed and job.error_policy == BatchJob.ErrorPolicy.SKIP:
        if job.rows_failed * 100.0 > job.max_error_pct * total:
            _fail_locked(
                job,
                f"{job.rows_failed} of {total} rows failed, more than max_error_pct={job.max_error_pct}% "
                "(see the errors file)",
            )
            return True
    return False


# --- chunks ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkOutcome:
    status: str  # done, skipped, leased, stopped, error
    detail: str = ""
    retry_in_s: float = 0.0


def _worker_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def chunk_run(*, job_id: int, index: int) -> ChunkOutcome:
    """Claim chunk `index` under a lease, run it, rename its part in, mark it done once."""
    token = uuid.uuid4().hex
    lease = timedelta(seconds=settings.BATCH_LEASE_S)
    with transaction.atomic():
        job = BatchJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.state != BatchJob.State.RUNNING:
            return ChunkOutcome("skipped", f"job is {job.state if job else 'gone'}")
        chunk = BatchChunk.objects.select_for_update().get(job_id=job_id, index=index)
        now = timezone.now()
        if chunk.state == BatchChunk.State.DONE:
            return ChunkOutcome("skipped", "chunk already done")
        if chunk.state == BatchChunk.State.RUNNING and chunk.lease_expires and chunk.lease_expires > now:
            return ChunkOutcome("leased", chunk.worker, (chunk.lease_expires - now).total_seconds() + 0.5)
        if chunk.attempts >= settings.BATCH_CHUNK_MAX_ATTEMPTS:
            _fail_locked(job, f"chunk {index} failed {chunk.attempts} times; last error: {chunk.last_error}")
            return ChunkOutcome("error", "too many attempts")
        chunk.state = BatchChunk.State.RUNNING
        chunk.attempts += 1
        chunk.lease_owner = token
        chunk.lease_expires = now + lease
        chunk.worker = _worker_label()
        chunk.started_at = now
        chunk.save(update_fields=["state", "attempts", "lease_owner", "lease_expires", "worker", "started_at"])
    started = time.monotonic()
    try:
        good_rows, bad, ran = _chunk_execute(job, chunk, token)
    except _Stop as stop:
        _chunk_release(chunk.pk, token, error="")
        return ChunkOutcome("stopped", str(stop))
    except _RowError as exc:
        _chunk_release(chunk.pk, token, error=str(exc))
        job_fail(job_id=job_id, reason=str(exc))
        return ChunkOutcome("error", str(exc))
    except Exception as exc:
        log.exception("batch job %s chunk %s: attempt %s failed", job_id, index, chunk.attempts)
        _chunk_release(chunk.pk, token, error=f"{type(exc).__name__}: {exc}")
        _dispatch("chunk", job_id, [index], countdown=2.0)
        return ChunkOutcome("error", str(exc))
    finally:
        tables.memory_release()
    return _chunk_complete(job_id, index, token, good_rows, len(bad), time.monotonic() - started, ran)


@dataclass(frozen=True)
class _Ran:
    """What a chunk leaves beside its part: the provider its session had, compare statistics."""

    provider: str
    stats: dict[str, Any]


def _chunk_execute(job: BatchJob, chunk: BatchChunk, token: str) -> tuple[int, list[tables.BadRow], _Ran]:
    renew = _lease_renewer(chunk.pk, token)
    if job.pipeline_version_id is not None:
        return _pipeline_chunk_execute(job, chunk, renew)
    version = job.model_version
    assert version is not None
    signature = _signature(version)
    model = executor.model_for(
        sha256=job.model_sha256, name=version.model.name, version=str(version.version), device=job.device
    )
    second = None
    if job.kind == BatchJob.Kind.COMPARE and job.compare_sha256 == job.model_sha256:
        # The same bytes under two version numbers: one session (the repository keys models
        # by digest, and loading it again as the other version would replace the first).
        second = model
    elif job.kind == BatchJob.Kind.COMPARE and job.compare_version is not None:
        other = job.compare_version
        second = executor.model_for(
            sha256=job.compare_sha256, name=other.model.name, version=str(other.version), device=job.device
        )
    table = _chunk_rows(job, chunk)
    feeds, good, bad = tables.model_feeds(table, job.column_mapping, signature)
    if bad and job.error_policy == BatchJob.ErrorPolicy.FAIL:
        first = bad[0]
        raise _RowError(f'row {first.row}, column "{first.column}": {first.reason} (error_policy is fail)')
    n = int(good.sum())
    step = settings.BATCH_INFER_ROWS
    pieces: dict[str, list[np.ndarray[Any, Any]]] = {name: [] for name in signature.output_names}
    pieces_b: dict[str, list[np.ndarray[Any, Any]]] = {name: [] for name in signature.output_names}
    for start in range(0, n, step):
        renew()
        batch = {name: values[start : start + step] for name, values in feeds.items()}
        for runner, into in ((model, pieces), (second, pieces_b)):
            if runner is None:
                continue
            try:
                outputs = runner.predict(batch)
            except (InputError, ModelExecutionError) as exc:
                raise _RowError(f"{runner.label} failed on rows of chunk {chunk.index}: {exc}") from exc
            for name, values in outputs.items():
                into.setdefault(name, []).append(values)
    renew(force=True)
    outputs = {name: np.concatenate(values) for name, values in pieces.items() if values}
    kept = table.filter(pa.array(good)) if bad else table
    stats: dict[str, Any] = {}
    if second is not None:
        outputs_b = {name: np.concatenate(values) for name, values in pieces_b.items() if values}
        stats = compare.chunk_stats(outputs, outputs_b, tolerance=float(job.report.get("tolerance", 0.0)))
        result = _result_table(kept, job.passthrough, compare.side_by_side(outputs, outputs_b))
    else:
        result = _result_table(kept, job.passthrough, outputs)
    tables.write_part(result, storage.part_path(job.pk, chunk.index, job.output_format), job.output_format)
    tables.errors_part(bad, storage.errors_part_path(job.pk, chunk.index))
    if not job.output_columns and result.num_rows:
        # A chunk whose rows all failed has no output columns: the first with rows names them.
        BatchJob.objects.filter(pk=job.pk, output_columns=[]).update(output_columns=result.column_names)
    providers = {model.provider, second.provider} if second is not None else {model.provider}
    return n, bad, _Ran(",".join(sorted(providers)), stats)


def _pipeline_chunk_execute(
    job: BatchJob, chunk: BatchChunk, renew: Callable[..., None]
) -> tuple[int, list[tables.BadRow], _Ran]:
    """A pipeline job's chunk: the graph over the chunk's good rows, as compiled when the
    job was created (a graph that now resolves to other model versions fails the job)."""
    assert job.pipeline_version is not None
    try:
        graph = compile_version(job.pipeline_version)
    except GraphError as exc:
        raise _RowError(f"pipeline {job.pipeline_version} no longer checks: {exc.message}") from exc
    changed = batch_pipeline.lineage_mismatch(graph, job.pipeline_models)
    if changed:
        raise _RowError(changed)
    table = _chunk_rows(job, chunk)
    feeds, good, bad = tables.model_feeds(table, job.column_mapping, batch_pipeline.signature(graph))
    if bad and job.error_policy == BatchJob.ErrorPolicy.FAIL:
        first = bad[0]
        raise _RowError(f'row {first.row}, column "{first.column}": {first.reason} (error_policy is fail)')
    n = int(good.sum())
    provider = ""
    outputs: dict[str, np.ndarray[Any, Any]] = {}
    if n:
        try:
            outputs, provider = batch_pipeline.run(
                graph, feeds, device=job.device, infer_rows=settings.BATCH_INFER_ROWS, between=renew
            )
        except (InputError, ModelExecutionError, UnknownEntity) as exc:
            raise _RowError(
                f"pipeline {graph.name}:{graph.version} failed on rows of chunk {chunk.index}: {exc}"
            ) from exc
    renew(force=True)
    kept = table.filter(pa.array(good)) if bad else table
    result = _result_table(kept, job.passthrough, outputs)
    tables.write_part(result, storage.part_path(job.pk, chunk.index, job.output_format), job.output_format)
    tables.errors_part(bad, storage.errors_part_path(job.pk, chunk.index))
    if not job.output_columns and result.num_rows:
        BatchJob.objects.filter(pk=job.pk, output_columns=[]).update(output_columns=result.column_names)
    return n, bad, _Ran(provider, {})


def _chunk_rows(job: BatchJob, chunk: BatchChunk) -> pa.Table:
    """The chunk's rows with their input row numbers: its chunk file, or its row groups of
    the input itself. An input that is gone or changed since the plan fails the job (running
    the chunk again would not bring it back, and its rows would not be the recorded input's)."""
    if job.chunks_from == BatchJob.ChunksFrom.FILES:
        return tables.read_chunk(tables.chunk_file(storage.chunks_dir(job.pk), chunk.index))
    try:
        path = storage.input_file(job.input_kind, job.input_path)
        if job.input_stamp and tables.file_stamp(path) != job.input_stamp:
            raise tables.TableFormatError(
                f"the input file changed since the job was planned (size:mtime {tables.file_stamp(path)}, "
                f"planned {job.input_stamp}); start a new job"
            )
        return tables.read_row_range(
            path,
            columns=_needed_columns(job.column_mapping, job.passthrough),
            row_start=chunk.row_start,
            row_count=chunk.row_count,
        )
    except (tables.TableFormatError, DomainError, OSError) as exc:
        message = exc.message if isinstance(exc, DomainError) else str(exc)
        raise _RowError(f"chunk {chunk.index}: reading the input failed: {message}") from exc


def _result_table(table: pa.Table, passthrough: Sequence[str], outputs: Mapping[str, Any]) -> pa.Table:
    columns: dict[str, Any] = {name: table.column(name) for name in passthrough}
    if table.num_rows == 0:
        return pa.table(columns)
    for name, values in tables.output_columns(outputs).items():
        columns[name if name not in columns else f"{name}_output"] = values
    return pa.table(columns)


def _lease_renewer(chunk_pk: int, token: str) -> Callable[..., None]:
    """A callable run between model calls: renews the lease every lease/3 seconds and
    stops the chunk when the job left RUNNING (cancelled, failed) or the lease was lost."""
    every = settings.BATCH_LEASE_S / 3.0
    last = [time.monotonic()]

    def renew(force: bool = False) -> None:
        if not force and time.monotonic() - last[0] < every:
            return
        last[0] = time.monotonic()
        expires = timezone.now() + timedelta(seconds=settings.BATCH_LEASE_S)
        updated = BatchChunk.objects.filter(
            pk=chunk_pk, lease_owner=token, state=BatchChunk.State.RUNNING, job__state=BatchJob.State.RUNNING
        ).update(lease_expires=expires)
        if not updated:
            raise _Stop("the job is no longer running or the lease was taken over")

    return renew


def _chunk_release(chunk_pk: int, token: str, *, error: str) -> None:
    fields: dict[str, Any] = {"state": BatchChunk.State.PENDING, "lease_owner": "", "lease_expires": None}
    if error:
        fields["last_error"] = error[:2000]
    BatchChunk.objects.filter(pk=chunk_pk, lease_owner=token).exclude(state=BatchChunk.State.DONE).update(**fields)


def _chunk_complete(
    job_id: int, index: int, token: str, good: int, failed: int, seconds: float, ran: _Ran
) -> ChunkOutcome:
    with transaction.atomic():
        job = BatchJob.objects.select_for_update().get(pk=job_id)
        chunk = BatchChunk.objects.select_for_update().get(job_id=job_id, index=index)
        if chunk.state == BatchChunk.State.DONE:
            # Another attempt finished first; its part (the same rows) is already in place.
            return ChunkOutcome("skipped", "done by another attempt")
        now = timezone.now()
        chunk.state = BatchChunk.State.DONE
        chunk.rows_done, chunk.rows_failed = good, failed
        chunk.lease_owner, chunk.lease_expires = "", None
        chunk.finished_at, chunk.seconds = now, seconds
        chunk.part_size = storage.part_path(job_id, index, job.output_format).stat().st_size
        chunk.provider, chunk.stats = ran.provider, ran.stats
        chunk.save(
            update_fields=[
                "provider",
                "stats",
                "state",
                "rows_done",
                "rows_failed",
                "lease_owner",
                "lease_expires",
                "finished_at",
                "seconds",
                "part_size",
            ]
        )
        BatchJob.objects.filter(pk=job_id).update(
            rows_done=F("rows_done") + good, rows_failed=F("rows_failed") + failed, last_progress_at=now
        )
        job.refresh_from_db()
        if ran.provider and ran.provider not in job.providers:
            job.providers = [*job.providers, ran.provider]
            job.status_detail = _provider_detail(job.device, job.providers, chunk.worker)
            job.save(update_fields=["providers", "status_detail"])
        if job.state != BatchJob.State.RUNNING:
            return ChunkOutcome("done", f"job is {job.state}")
        if _over_error_budget(job):
            return ChunkOutcome("done", "job failed: too many bad rows")
        if not job.chunks.exclude(state=BatchChunk.State.DONE).exists():
            job.state = BatchJob.State.FINALIZING
            job.save(update_fields=["state"])
            transaction.on_commit(lambda: _dispatch("finalize", job_id))
    return ChunkOutcome("done", f"{good} rows, {failed} failed")


def _provider_detail(device: str, providers: Sequence[str], worker: str) -> str:
    """Said when a GPU job did not get CUDA (everything else is as asked: nothing to say)."""
    if device != "gpu" or all("CUDAExecutionProvider" in p for p in providers):
        return ""
    return (
        f"device=gpu, but ONNX Runtime gave {', '.join(providers)} (seen on {worker}): CUDA is not usable on that "
        "worker, so its chunks ran on CPU"
    )


# --- finalize, fail, cancel, resume ----------------------------------------------------------------


def job_finalize(*, job_id: int) -> str:
    """Join the parts in chunk order into the result and the errors file, with their digests."""
    job = BatchJob.objects.get(pk=job_id)
    if job.state != BatchJob.State.FINALIZING:
        return f"job is {job.state}"
    indexes = list(job.chunks.order_by("index").values_list("index", flat=True))
    parts = [storage.part_path(job.pk, i, job.output_format) for i in indexes]
    result = storage.result_path(job.pk, job.output_format)
    header = tables.csv_header(job.output_columns) if job.output_format == "csv" else b""
    error_parts = [storage.plan_errors_path(job.pk)] if job.plan_failed_rows else []
    error_parts += [storage.errors_part_path(job.pk, i) for i in indexes]
    errors = storage.errors_path(job.pk)
    report = dict(job.report)
    try:
        tables.concatenate(parts, result, job.output_format, header=header)
        tables.concatenate(error_parts, errors, "csv", header=b"row,column,reason\n")
        result_sha, result_size = storage.file_sha256(result)
        errors_sha, _ = storage.file_sha256(errors)
        if job.kind == BatchJob.Kind.COMPARE:
            stats = list(job.chunks.order_by("index").values_list("stats", flat=True))
            report.update(compare.report(stats, tolerance=float(report.get("tolerance", 0.0))))
            report.update(_compare_sides(job))
    except (OSError, pa.ArrowException) as exc:
        # A missing or unreadable part does not come back by retrying: say so and stop.
        job_fail(job_id=job_id, reason=f"joining the parts failed: {exc}", expect=BatchJob.State.FINALIZING)
        return "failed"
    with transaction.atomic():
        job = BatchJob.objects.select_for_update().get(pk=job_id)
        if job.state != BatchJob.State.FINALIZING:
            return f"job is {job.state}"
        job.state = BatchJob.State.SUCCEEDED
        job.result_sha256, job.result_size, job.errors_sha256 = result_sha, result_size, errors_sha
        job.finished_at = job.last_progress_at = timezone.now()
        job.report = report
        job.save(
            update_fields=[
                "state",
                "result_sha256",
                "result_size",
                "errors_sha256",
                "finished_at",
                "last_progress_at",
                "report",
            ]
        )
    # The chunk files were only needed to run: the result and parts stay until retention.
    shutil.rmtree(storage.chunks_dir(job_id), ignore_errors=True)
    return "succeeded"


def _compare_sides(job: BatchJob) -> dict[str, Any]:
    def side(version: ModelVersion, sha256: str) -> dict[str, Any]:
        return {"model": version.model.name, "version": version.version, "stage": version.stage, "sha256": sha256}

    assert job.compare_version is not None and job.model_version is not None
    return {"a": side(job.model_version, job.model_sha256), "b": side(job.compare_version, job.compare_sha256)}


def _fail_locked(job: BatchJob, reason: str) -> None:
    job.state = BatchJob.State.FAILED
    job.error = reason[:5000]
    job.finished_at = timezone.now()
    job.save(update_fields=["state", "error", "finished_at"])


def job_fail(*, job_id: int, reason: str, expect: str | None = None) -> None:
    with transaction.atomic():
        job = BatchJob.objects.select_for_update().get(pk=job_id)
        if job.is_terminal or (expect is not None and job.state != expect):
            return
        _fail_locked(job, reason)


def job_cancel(*, job: BatchJob, user: Any, source_ip: str | None = None) -> BatchJob:
    """Stop a job: running chunks notice at their next model call and release themselves."""
    with transaction.atomic():
        locked = BatchJob.objects.select_for_update().get(pk=job.pk)
        if locked.is_terminal:
            raise JobStateConflict(f"{locked} is already {locked.state}; only a running job can be cancelled")
        before = locked.state
        locked.state = BatchJob.State.CANCELLED
        locked.finished_at = timezone.now()
        locked.save(update_fields=["state", "finished_at"])
        audit_record(actor=user, action="batch_job.cancel", obj=locked, before={"state": before}, source_ip=source_ip)
    return locked


def job_resume(*, job: BatchJob, user: Any, source_ip: str | None = None) -> BatchJob:
    """Run a cancelled or failed job again from where it stopped: done chunks are kept."""
    with transaction.atomic():
        locked = BatchJob.objects.select_for_update().get(pk=job.pk)
        if locked.state not in (BatchJob.State.CANCELLED, BatchJob.State.FAILED):
            raise JobStateConflict(f"{locked} is {locked.state}; only a cancelled or failed job can be resumed")
        if locked.files_deleted_at is not None:
            raise JobStateConflict(f"the files of {locked} were removed by the retention sweep; start a new job")
        before = locked.state
        if locked.started_at and locked.finished_at:
            locked.active_seconds_before += (locked.finished_at - locked.started_at).total_seconds()
        now = timezone.now()
        locked.started_at = locked.last_progress_at = now
        locked.finished_at = None
        locked.error = ""
        if locked.rows_total is None:
            locked.state, step, indexes = BatchJob.State.PLANNING, "plan", []
        else:
            pending = locked.chunks.exclude(state=BatchChunk.State.DONE)
            indexes = list(pending.values_list("index", flat=True))
            # Attempts count again from zero after a person resumed the job.
            pending.update(state=BatchChunk.State.PENDING, lease_owner="", lease_expires=None, attempts=0)
            if indexes:
                locked.state, step = BatchJob.State.RUNNING, "chunk"
            else:
                locked.state, step = BatchJob.State.FINALIZING, "finalize"
        locked.save(
            update_fields=["state", "started_at", "last_progress_at", "finished_at", "error", "active_seconds_before"]
        )
        audit_record(actor=user, action="batch_job.resume", obj=locked, before={"state": before}, source_ip=source_ip)
        transaction.on_commit(lambda: _dispatch(step, locked.pk, indexes))
    return locked


def compare_attach(
    *, job: BatchJob, request_id: int, user: Any, url: str, source_ip: str | None = None
) -> PromotionRequest:
    """Attach a finished compare job's report to a pending promotion request of one of its versions."""
    if job.kind != BatchJob.Kind.COMPARE:
        raise JobStateConflict(f"{job} is not a compare job; only a compare job's report is evidence")
    if job.state != BatchJob.State.SUCCEEDED:
        raise JobStateConflict(f"{job} is {job.state}; attach its report once it has succeeded")
    request = registry_selectors.promotion_get(request_id=request_id, user=user)
    if request.version_id not in (job.model_version_id, job.compare_version_id):
        raise BatchInputError(
            f"promotion request #{request.pk} is for {request.version}, which {job} did not compare "
            f"({job.model_ref} against {job.compare_version})"
        )
    return promotion_evidence_attach(
        request_id=request.pk,
        user=user,
        kind="batch_compare",
        ref=job.pk,
        url=url,
        summary=f"{job.model_version} vs {job.compare_version}: {compare.summary(job.report)}",
        source_ip=source_ip,
    )


# --- the periodic sweep ---------------------------------------------------------------------------


def _queue_consumers() -> dict[str, list[str]] | None:
    """{queue: [worker, ...]} from the workers that answer within a second; None if the broker
    could not be asked."""
    try:
        answers = celery_app.control.inspect(timeout=1.0).active_queues() or {}
    except Exception:
        log.exception("batch sweep: could not ask the workers which queues they consume")
        return None
    consumers: dict[str, list[str]] = {}
    for worker, queues in answers.items():
        for queue in queues or []:
            consumers.setdefault(queue.get("name", ""), []).append(worker)
    return consumers


def _waiting_detail(job: BatchJob, consumers: dict[str, list[str]] | None, now: Any) -> str:
    queue = _queue_for(job.device)
    if consumers is None or consumers.get(queue):
        return job.status_detail
    start = (
        "celery -A workers.celery worker -Q batch_gpu -c 1 (on a host with a GPU)"
        if job.device == "gpu"
        else "make worker"
    )
    return (
        f"waiting: no worker consumes the {queue} queue (asked at {now:%Y-%m-%d %H:%M:%S} UTC); the job stays "
        f"queued until one does: {start}"
    )


def batch_sweep(*, now: Any = None) -> dict[str, int]:
    """Re-queue expired leases and stalled jobs; enforce retention and the disk budget.

    Idempotent and short: a chunk queued twice runs once (the lease and the done flag).
    """
    now = now or timezone.now()
    stall = now - timedelta(seconds=settings.BATCH_STALL_S)
    counts = {"expired": 0, "stalled": 0, "waiting": 0, "deleted": 0}
    expired = BatchChunk.objects.filter(
        state=BatchChunk.State.RUNNING, lease_expires__lt=now, job__state=BatchJob.State.RUNNING
    )
    for job_id, index in list(expired.values_list("job_id", "index")):
        updated = BatchChunk.objects.filter(
            job_id=job_id, index=index, state=BatchChunk.State.RUNNING, lease_expires__lt=now
        ).update(state=BatchChunk.State.PENDING, lease_owner="", lease_expires=None, last_error="lease expired")
        if updated:
            counts["expired"] += 1
            _dispatch("chunk", job_id, [index])
    stalled = BatchJob.objects.filter(
        Q(state=BatchJob.State.PLANNING, created_at__lt=stall, started_at__isnull=True)
        | Q(state=BatchJob.State.PLANNING, started_at__lt=stall)
        | Q(state__in=[BatchJob.State.RUNNING, BatchJob.State.FINALIZING], last_progress_at__lt=stall)
    )
    consumers: dict[str, list[str]] | None = None
    for job in stalled:
        counts["stalled"] += 1
        if consumers is None and not celery_app.conf.task_always_eager:
            consumers = _queue_consumers()
        detail = _waiting_detail(job, consumers, now)
        BatchJob.objects.filter(pk=job.pk).update(last_progress_at=now, status_detail=detail)
        if detail.startswith("waiting: no worker"):
            counts["waiting"] += 1
            continue  # nobody would take more copies of its messages: they are still queued
        if job.state == BatchJob.State.PLANNING:
            _dispatch("plan", job.pk)
        elif job.state == BatchJob.State.FINALIZING:
            _dispatch("finalize", job.pk)
        else:
            pending = job.chunks.filter(state=BatchChunk.State.PENDING).values_list("index", flat=True)
            _dispatch("chunk", job.pk, list(pending))
    counts["deleted"] = _retention(now)
    return counts


def _retention(now: Any) -> int:
    finished = BatchJob.objects.filter(state__in=BatchJob.TERMINAL, files_deleted_at__isnull=True)
    old = finished.filter(finished_at__lt=now - timedelta(days=settings.BATCH_RETENTION_DAYS))
    deleted = 0
    for job_id in list(old.values_list("pk", flat=True)):
        _job_files_remove(job_id, now)
        deleted += 1
    # Over the disk budget: the oldest finished jobs go first, whatever their age.
    used = storage.tree_size(storage.store_root())
    for job_id in list(finished.exclude(pk__in=old.values("pk")).order_by("finished_at").values_list("pk", flat=True)):
        if used <= settings.BATCH_DISK_BUDGET_BYTES:
            break
        used -= _job_files_remove(job_id, now)
        deleted += 1
    return deleted


def _job_files_remove(job_id: int, now: Any) -> int:
    job = BatchJob.objects.get(pk=job_id)
    freed = storage.job_files_delete(job_id)
    BatchJob.objects.filter(pk=job_id).update(files_deleted_at=now)
    if job.input_kind == BatchJob.InputKind.UPLOAD:
        still_used = BatchJob.objects.filter(input_path=job.input_path, files_deleted_at__isnull=True).exists()
        if not still_used:
            target = storage.store_root() / job.input_path
            try:
                freed += target.stat().st_size
                target.unlink()
            except FileNotFoundError:
                pass
    return freed
