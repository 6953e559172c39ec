"""The one download-and-cache client for artifacts, by sha256 (no Django).

Used by the inference worker (workers/inference_worker.py: a worker on a host without the
shared artifact volume fetches from `GET /api/v1/artifacts/{sha256}` with its worker key)
and by the Spark helper (inference/batch/spark.py: executors fetch a version's artifact
with a user's API token).

    cache = ArtifactCache(Path("/var/cache/modelhub"), budget_bytes=10 * 2**30)
    path = cache.get(sha256, url, token=key)   # downloaded once, digest checked

- A cached artifact is `<folder>/<sha256>.onnx`; it is only ever written whole: the
  download goes to a temporary file in the same folder, its digest is checked, then it is
  renamed into place. A digest that differs is refused (`ArtifactDigestMismatch`) and
  nothing is left behind.
- A cache hit needs no network: with the platform unreachable, what is cached still loads.
- `budget_bytes`: the sweep (after every download, and whenever the caller asks) removes
  the least recently used artifacts (by access time, which `get` sets on every use) until
  the folder fits, never a pinned one (the caller's artifacts in use) nor one newer than
  the budget allows to remove. Left-over temporary files of a crashed download go too.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("modelhub.artifacts")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_SUFFIX = ".onnx"
_PART = ".part"
_STALE_PART_S = 3600.0


class ArtifactError(RuntimeError):
    """The artifact could not be had."""


class ArtifactDigestMismatch(ArtifactError):
    """The downloaded bytes do not have the digest asked for: refused, nothing cached."""


class ArtifactUnavailable(ArtifactError):
    """The platform did not answer or answered 5xx: worth trying again later."""


class ArtifactRefused(ArtifactError):
    """The platform said no (401, 403, 404, ...): trying again will not help."""


@dataclass
class SweepResult:
    removed: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    kept_bytes: int = 0


class ArtifactCache:
    """A folder of artifacts named by digest, filled over HTTP, bounded by a disk budget."""

    def __init__(self, folder: Path | str, *, budget_bytes: int | None = None, timeout_s: float = 300.0) -> None:
        self.folder = Path(folder)
        self.budget_bytes = budget_bytes if budget_bytes and budget_bytes > 0 else None
        self.timeout_s = timeout_s
        self._pins: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._fetching: dict[str, threading.Lock] = {}

    def path(self, sha256: str) -> Path:
        if not _DIGEST.match(sha256):
            raise ValueError(f"not a sha256 digest: {sha256!r}")
        return self.folder / f"{sha256}{_SUFFIX}"

    def cached(self, sha256: str) -> Path | None:
        """The cached artifact (its access time set to now), or None."""
        path = self.path(sha256)
        try:
            now = time.time()
            os.utime(path, (now, path.stat().st_mtime))
        except FileNotFoundError:
            return None
        return path

    # -- pins: artifacts in use are never swept

    def pin(self, sha256: str) -> None:
        with self._lock:
            self._pins[sha256] += 1

    def unpin(self, sha256: str) -> None:
        with self._lock:
            self._pins[sha256] -= 1
            if self._pins[sha256] <= 0:
                del self._pins[sha256]

    # -- fetch

    def get(self, sha256: str, url: str, *, token: str = "") -> Path:
        """The artifact with this digest: from the cache, else downloaded from `url` and checked."""
        found = self.cached(sha256)
        if found is not None:
            return found
        with self._lock:
            lock = self._fetching.setdefault(sha256, threading.Lock())
        with lock:  # one download per digest in this process; others wait for it
            found = self.cached(sha256)
            if found is None:
                found = self._download(sha256, url, token)
        self.sweep()
        return found

    def _download(self, sha256: str, url: str, token: str) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.path(sha256)
        tmp = self.folder / f".{sha256}.{uuid.uuid4().hex}{_PART}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        digest = hashlib.sha256()
        started = time.monotonic()
        size = 0
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response, open(tmp, "wb") as out:  # noqa: S310 - the platform's URL
                while block := response.read(1024 * 1024):
                    digest.update(block)
                    out.write(block)
                    size += len(block)
            got = digest.hexdigest()
            if got != sha256:
                raise ArtifactDigestMismatch(f"the artifact from {url} has sha256 {got}, expected {sha256}: refused")
            os.replace(tmp, final)
        except urllib.error.HTTPError as exc:
            detail = _body(exc)
            if exc.code >= 500 or exc.code == 429:
                raise ArtifactUnavailable(f"{url} answered {exc.code}: {detail}") from None
            raise ArtifactRefused(f"{url} answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ArtifactUnavailable(f"{url} is unreachable: {reason}") from None
        finally:
            tmp.unlink(missing_ok=True)
        logger.info("fetched artifact %s (%d bytes) in %.0f ms", sha256[:12], size, (time.monotonic() - started) * 1000)
        return final

    # -- the disk budget

    def sweep(self, keep: Iterable[str] = ()) -> SweepResult:
        """Remove least recently used artifacts until the folder fits the budget; never pinned ones."""
        result = SweepResult()
        if not self.folder.is_dir():
            return result
        with self._lock:
            protected = set(self._pins) | set(keep)
        now = time.time()
        entries: list[tuple[float, int, Path, str]] = []
        for path in self.folder.iterdir():
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if path.name.endswith(_PART):
                if now - st.st_mtime > _STALE_PART_S:  # a crashed download's leftover
                    path.unlink(missing_ok=True)
                continue
            if not path.name.endswith(_SUFFIX):
                continue
            entries.append((st.st_atime, st.st_size, path, path.name[: -len(_SUFFIX)]))
        total = sum(e[1] for e in entries)
        if self.budget_bytes is not None and total > self.budget_bytes:
            for _, size, path, sha in sorted(entries, key=lambda e: e[0]):
                if total <= self.budget_bytes:
                    break
                if sha in protected:
                    continue
                path.unlink(missing_ok=True)
                total -= size
                result.removed.append(sha)
                result.freed_bytes += size
            if result.removed:
                logger.info(
                    "artifact cache sweep removed %d (%d bytes); %d bytes left of a budget of %d",
                    len(result.removed),
                    result.freed_bytes,
                    total,
                    self.budget_bytes,
                )
        result.kept_bytes = total
        return result


def _body(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read(500).decode("utf-8", "replace").strip() or exc.reason
    except Exception:  # noqa: BLE001 - only for the message
        return str(exc.reason)


class ArtifactSource:
    """Where an inference worker gets an artifact: the shared volume, or the platform by digest.

    mode `auto` (default): the local path when the file is there (a volume shared with the
    web processes), else the cache, else a download from `{platform_url}/api/v1/artifacts/
    {sha256}` with the worker key; `fetch`: always the cache/platform; `shared`: only the
    volume. A download is retried with back-off (1 s doubling to 30 s) while the platform is
    unreachable, telling `waiting` why, until it answers or `stop` is set; a refusal or a
    digest mismatch raises at once. What came through the cache is pinned (never swept)
    until `release`.
    """

    MODES = ("auto", "fetch", "shared")

    def __init__(self, *, mode: str, cache: ArtifactCache, platform_url: str = "", key: str = "") -> None:
        if mode not in self.MODES:
            raise ValueError(f"artifact mode: one of {', '.join(self.MODES)}, got {mode!r}")
        self.mode, self.cache, self.platform_url, self.key = mode, cache, platform_url.rstrip("/"), key

    def acquire(
        self,
        sha256: str,
        local_path: str,
        *,
        stop: threading.Event,
        waiting: Callable[[str], None] = lambda why: None,
    ) -> tuple[str, str]:
        """(the file to load, where it came from: `shared`, `cache` or `fetched`)."""
        if self.mode == "shared" or (self.mode == "auto" and os.path.isfile(local_path)):
            return str(local_path), "shared"
        self.cache.pin(sha256)
        try:
            return self._from_cache(sha256, local_path, stop, waiting)
        except BaseException:
            self.cache.unpin(sha256)
            raise

    def _from_cache(
        self, sha256: str, local_path: str, stop: threading.Event, waiting: Callable[[str], None]
    ) -> tuple[str, str]:
        if self.cache.cached(sha256) is not None:
            return str(self.cache.path(sha256)), "cache"
        if not self.platform_url:
            raise ArtifactError(
                f"the artifact {sha256[:12]} is neither at {local_path} nor in the cache {self.cache.folder}, "
                "and MODELHUB_WORKER_PLATFORM_URL is not set to fetch it"
            )
        url = f"{self.platform_url}/api/v1/artifacts/{sha256}"
        delay = 1.0
        while True:
            try:
                return str(self.cache.get(sha256, url, token=self.key)), "fetched"
            except ArtifactUnavailable as exc:
                waiting(f"waiting for the platform to fetch the artifact (next try in {delay:.0f} s): {exc}")
                if stop.wait(delay):
                    raise ArtifactError("unloaded while waiting for the artifact") from None
                delay = min(delay * 2, 30.0)

    def release(self, sha256: str, source: str) -> None:
        """Done with an artifact `acquire` gave: it may leave the cache when that is over its budget."""
        if source != "shared":
            self.cache.unpin(sha256)
            self.cache.sweep()
