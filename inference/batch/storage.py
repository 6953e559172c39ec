"""Where batch files live: uploaded inputs (by sha256), per-job chunks, parts and results.

    <BATCH_STORE>/tmp/                          uploads being received
    <BATCH_STORE>/inputs/<ab>/<sha256>.<fmt>    uploaded inputs, content-addressed
    <BATCH_STORE>/jobs/<id>/chunks/             the input split into Parquet chunk files
    <BATCH_STORE>/jobs/<id>/parts/              one output part per chunk (+ errors parts)
    <BATCH_STORE>/jobs/<id>/result.<fmt>        the joined result, errors.csv beside it

Inputs given as a path must lie inside MODELHUB_BATCH_DATA_DIR; the check resolves links.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler

from config.errors import DomainError, NotFound
from registry.storage import ArtifactUploadHandler, StagedArtifact, StagedUploadedFile

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class InputPathRefused(DomainError):
    code = "input_path_refused"


def store_root() -> Path:
    return Path(settings.BATCH_STORE)


def _tmp_dir() -> Path:
    path = store_root() / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def job_dir(job_id: int) -> Path:
    return store_root() / "jobs" / str(int(job_id))


def chunks_dir(job_id: int) -> Path:
    return job_dir(job_id) / "chunks"


def parts_dir(job_id: int) -> Path:
    path = job_dir(job_id) / "parts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def part_path(job_id: int, index: int, fmt: str) -> Path:
    return parts_dir(job_id) / f"part-{index:05d}.{fmt}"


def errors_part_path(job_id: int, index: int) -> Path:
    return parts_dir(job_id) / f"errors-{index:05d}.csv"


def plan_errors_path(job_id: int) -> Path:
    return parts_dir(job_id) / "errors-plan.csv"


def result_path(job_id: int, fmt: str) -> Path:
    return job_dir(job_id) / f"result.{fmt}"


def errors_path(job_id: int) -> Path:
    return job_dir(job_id) / "errors.csv"


def job_files_delete(job_id: int) -> int:
    """Remove a job's folder; returns the bytes freed."""
    folder = job_dir(job_id)
    freed = tree_size(folder)
    shutil.rmtree(folder, ignore_errors=True)
    return freed


def tree_size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except FileNotFoundError:
                pass
    return total


def uploaded_input_relpath(sha256: str, fmt: str) -> str:
    if not _DIGEST.match(sha256):
        raise ValueError(f"not a sha256 digest: {sha256!r}")
    return f"inputs/{sha256[:2]}/{sha256}.{fmt}"


def input_commit(staged: StagedArtifact, fmt: str) -> str:
    """Move a received upload into place under its digest; returns its store-relative path."""
    relative = uploaded_input_relpath(staged.sha256, fmt)
    final = store_root() / relative
    if final.exists():
        staged.discard()
        return relative
    final.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(staged.tmp_path, 0o444)
    os.replace(staged.tmp_path, final)
    return relative


def data_dir() -> Path | None:
    configured = settings.BATCH_DATA_DIR
    return Path(configured).resolve() if configured else None


def data_path_resolve(relative: str) -> Path:
    """The file `relative` names inside the data folder; refused if it leaves the folder."""
    root = data_dir()
    if root is None:
        raise InputPathRefused("input_path: no data folder is configured (set MODELHUB_BATCH_DATA_DIR)")
    if not relative or "\x00" in relative:
        raise InputPathRefused("input_path: expected a path inside the data folder")
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root):
        raise InputPathRefused(
            f"input_path: {relative!r} leaves the data folder; only files inside it can be read",
            details={"input_path": relative},
        )
    if not candidate.is_file():
        raise NotFound(f"input_path: no file {relative!r} in the data folder")
    return candidate


def input_file(input_kind: str, input_path: str) -> Path:
    """The file a job reads, wherever it lives."""
    if input_kind == "path":
        return data_path_resolve(input_path)
    return store_root() / input_path


def file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


class BatchInputUploadHandler(ArtifactUploadHandler):
    """Streams a multipart `input` field into the batch store's tmp folder while hashing it.

    The artifact handler's receive/complete/abort logic, with this store and this limit.
    """

    field_name_wanted = "input"

    def new_file(self, field_name: str, file_name: str, *args: Any, **kwargs: Any) -> None:
        FileUploadHandler.new_file(self, field_name, file_name, *args, **kwargs)
        self.active = field_name == self.field_name_wanted
        if not self.active:
            return
        self.tmp = _tmp_dir() / f"{uuid.uuid4().hex}.part"
        self.out = open(self.tmp, "xb")  # noqa: SIM115 - closed in file_complete or _abort
        self.digest = hashlib.sha256()
        self.size = 0
        self.limit = settings.BATCH_MAX_INPUT_BYTES


__all__ = ["BatchInputUploadHandler", "StagedUploadedFile", "StagedArtifact"]
