"""The artifact store: files named by their SHA-256, never by anything a user sent.

Uploads are streamed into `<store>/tmp/` while being hashed and counted, then moved into
`<store>/sha256/<first two hex digits>/<digest>.onnx` with an atomic rename.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload

from config.errors import PayloadTooLarge

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StagedArtifact:
    """An upload written to the store's tmp folder, hashed, not yet in place."""

    tmp_path: Path
    sha256: str
    size: int
    filename: str

    def discard(self) -> None:
        self.tmp_path.unlink(missing_ok=True)


def store_root() -> Path:
    return Path(settings.ARTIFACT_STORE)


def _tmp_dir() -> Path:
    path = store_root() / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_digest(value: str) -> bool:
    return bool(_DIGEST.match(value))


def artifact_path(sha256: str) -> Path:
    if not is_digest(sha256):
        raise ValueError(f"not a sha256 digest: {sha256!r}")
    return store_root() / "sha256" / sha256[:2] / f"{sha256}.onnx"


def _safe_filename(name: str) -> str:
    # Kept only for display and downloads; never used to build a path.
    base = os.path.basename(name.replace("\\", "/"))
    return re.sub(r"[^A-Za-z0-9._-]", "_", base)[:200] or "model.onnx"


def stage_stream(stream: IO[bytes], *, filename: str, limit: int | None = None) -> StagedArtifact:
    """Copy a stream into the tmp folder, hashing it and stopping at the size limit."""
    limit = settings.MAX_ARTIFACT_BYTES if limit is None else limit
    tmp = _tmp_dir() / f"{uuid.uuid4().hex}.part"
    digest = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "xb") as out:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"artifact is larger than the limit of {limit} bytes")
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return StagedArtifact(tmp_path=tmp, sha256=digest.hexdigest(), size=size, filename=_safe_filename(filename))


def stage_bytes(data: bytes, *, filename: str) -> StagedArtifact:
    import io

    return stage_stream(io.BytesIO(data), filename=filename)


def commit(staged: StagedArtifact) -> tuple[Path, bool]:
    """Move a staged upload into place; returns (path, created). Same content, same file."""
    final = artifact_path(staged.sha256)
    if final.exists():
        staged.discard()
        return final, False
    final.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(staged.tmp_path, 0o444)
    os.replace(staged.tmp_path, final)
    return final, True


class StagedUploadedFile(UploadedFile):
    """What a request's `artifact` field becomes: already staged and hashed."""

    def __init__(self, staged: StagedArtifact, content_type: str | None) -> None:
        super().__init__(file=None, name=staged.filename, content_type=content_type, size=staged.size)
        self.staged = staged

    def close(self) -> None:  # nothing open
        return None


class ArtifactUploadHandler(FileUploadHandler):
    """Streams a multipart `artifact` field straight into the store's tmp folder.

    The whole body is never held in memory, the digest is computed on the way, and an
    upload over the limit stops at the limit instead of filling the disk.
    """

    field_name_wanted = "artifact"

    def new_file(self, field_name: str, file_name: str, *args: Any, **kwargs: Any) -> None:
        super().new_file(field_name, file_name, *args, **kwargs)
        self.active = field_name == self.field_name_wanted
        if not self.active:
            return
        self.tmp = _tmp_dir() / f"{uuid.uuid4().hex}.part"
        self.out = open(self.tmp, "xb")
        self.digest = hashlib.sha256()
        self.size = 0
        self.limit = settings.MAX_ARTIFACT_BYTES

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if not self.active:
            return raw_data
        self.size += len(raw_data)
        if self.size > self.limit:
            self._abort()
            self.too_large = True
            # Drain the rest without storing it, so the client still reads our 413.
            raise StopUpload(connection_reset=False)
        self.digest.update(raw_data)
        self.out.write(raw_data)
        return None

    def file_complete(self, file_size: int) -> UploadedFile | None:
        if not self.active:
            return None
        self.out.close()
        staged = StagedArtifact(
            tmp_path=self.tmp, sha256=self.digest.hexdigest(), size=self.size, filename=_safe_filename(self.file_name)
        )
        self.active = False
        return StagedUploadedFile(staged, self.content_type)

    def upload_interrupted(self) -> None:
        self._abort()

    def _abort(self) -> None:
        if getattr(self, "active", False):
            self.out.close()
            self.tmp.unlink(missing_ok=True)
            self.active = False
