"""The Spark helper's artifact client (inference/runtime/artifacts.py): fetched by digest once,
refused when the digest differs."""

from __future__ import annotations

import pytest

from accounts.services import user_token_create
from inference.batch.spark import version_resolve
from inference.runtime.artifacts import ArtifactCache, ArtifactDigestMismatch
from tests.batch.conftest import ready_version
from tests.onnx_models import mlp

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_artifact_is_fetched_once_by_digest_and_a_wrong_digest_is_refused(live_server, engineer, tmp_path):
    version = ready_version("mlp4", mlp(hidden=8, features=4, classes=3), stage="Staging")
    _, token = user_token_create(user=engineer, name="spark")
    ref = version_resolve(base_url=live_server.url, token=token, model="mlp4@staging")
    assert (ref.version, ref.sha256) == (1, version.artifact_sha256)
    cache = ArtifactCache(tmp_path / "cache")
    path = cache.get(ref.sha256, ref.artifact_url, token=token)
    assert path.name == f"{version.artifact_sha256}.onnx"
    assert cache.get(ref.sha256, "http://127.0.0.1:9/gone", token=token) == path
    with pytest.raises(ArtifactDigestMismatch):
        cache.get("0" * 64, ref.artifact_url, token=token)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [path.name]  # nothing half-written left
    with pytest.raises(LookupError):
        version_resolve(base_url=live_server.url, token=token, model="mlp4@production")
