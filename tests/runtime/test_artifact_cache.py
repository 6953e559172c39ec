"""The artifact cache's disk budget: the sweep removes the least recently used artifacts
(by access time) until the folder fits, never a pinned one; an unreachable platform is
`ArtifactUnavailable` (retried by the worker), not a failure."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from inference.runtime.artifacts import ArtifactCache, ArtifactError, ArtifactSource, ArtifactUnavailable


def _put(cache: ArtifactCache, name: str, size: int, used_s_ago: float) -> str:
    sha = name * 64
    path = cache.path(sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    when = time.time() - used_s_ago
    os.utime(path, (when, when))
    return sha


def test_the_sweep_removes_the_least_recently_used_until_the_budget_fits(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path, budget_bytes=2500)
    oldest = _put(cache, "a", 1000, used_s_ago=300)
    older = _put(cache, "b", 1000, used_s_ago=200)
    newer = _put(cache, "c", 1000, used_s_ago=100)
    newest = _put(cache, "d", 1000, used_s_ago=0)
    cache.cached(oldest)  # used just now: the least recently used is now "b"

    result = cache.sweep()

    assert sorted(result.removed) == sorted([older, newer])
    assert result.kept_bytes == 2000
    assert sorted(p.name[0] for p in tmp_path.iterdir()) == ["a", "d"]
    assert cache.cached(newest) is not None


def test_the_sweep_never_removes_an_artifact_in_use(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path, budget_bytes=1500)
    in_use = _put(cache, "a", 1000, used_s_ago=300)
    loading = _put(cache, "b", 1000, used_s_ago=200)
    idle = _put(cache, "c", 1000, used_s_ago=100)
    cache.pin(in_use)

    assert cache.sweep(keep=[loading]).removed == [idle]
    assert cache.sweep(keep=[loading]).removed == []  # over the budget, but everything left is in use
    cache.unpin(in_use)
    assert cache.sweep().removed == [in_use]


def test_a_crashed_downloads_leftover_goes_and_no_budget_keeps_everything(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    kept = _put(cache, "a", 1000, used_s_ago=10**6)
    stale = tmp_path / f".{kept}.0123.part"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = tmp_path / f".{kept}.4567.part"  # another process's download in progress
    fresh.write_bytes(b"half")

    assert cache.sweep().removed == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{kept}.onnx", fresh.name])


def test_an_unreachable_platform_is_unavailable_and_leaves_nothing(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    cache = ArtifactCache(tmp_path / "cache", timeout_s=5)
    with pytest.raises(ArtifactUnavailable, match="unreachable"):
        cache.get("e" * 64, f"http://127.0.0.1:{port}/api/v1/artifacts/{'e' * 64}", token="k")
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_download_waits_for_a_platform_that_is_briefly_away(tmp_path: Path) -> None:
    body = b"an artifact's bytes"
    sha = hashlib.sha256(body).hexdigest()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    servers: list[http.server.HTTPServer] = []
    waits: list[str] = []

    def platform_comes_back(why: str) -> None:  # called after the first failed try
        waits.append(why)
        if not servers:
            servers.append(http.server.HTTPServer(("127.0.0.1", port), Handler))
            threading.Thread(target=servers[0].serve_forever, daemon=True).start()

    source = ArtifactSource(
        mode="auto", cache=ArtifactCache(tmp_path / "cache", budget_bytes=1), platform_url=f"http://127.0.0.1:{port}"
    )
    try:
        path, where = source.acquire(
            sha, str(tmp_path / "absent.onnx"), stop=threading.Event(), waiting=platform_comes_back
        )
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    assert where == "fetched" and Path(path).read_bytes() == body
    assert len(waits) == 1 and "unreachable" in waits[0]
    assert source.cache.sweep().removed == []  # over its 1-byte budget, but in use
    source.release(sha, where)
    assert not Path(path).exists()  # released: the budget applies


def test_a_failed_acquire_leaves_nothing_pinned(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache", budget_bytes=1)
    source = ArtifactSource(mode="fetch", cache=cache)  # no platform to fetch from
    with pytest.raises(ArtifactError, match="MODELHUB_WORKER_PLATFORM_URL is not set"):
        source.acquire("f" * 64, str(tmp_path / "absent.onnx"), stop=threading.Event())
    _put(cache, "f", 10, used_s_ago=0)
    assert cache.sweep().removed == ["f" * 64]
