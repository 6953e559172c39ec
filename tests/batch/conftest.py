"""Batch job fixtures: ready versions written straight into the store, tables built in code."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inference.runtime.session import LoadedModel
from registry import storage as registry_storage
from registry.models import ModelVersion, RegisteredModel
from tests import onnx_models

FEATURES = [f"f{i}" for i in range(4)]


def ready_version(
    name: str,
    data: bytes,
    *,
    version: int = 1,
    stage: str = ModelVersion.Stage.NONE,
    status: str = ModelVersion.Status.READY,
    team: Any = None,
    metadata: dict[str, Any] | None = None,
) -> ModelVersion:
    """A version as validation leaves it, without running validation (tests of batch jobs)."""
    staged = registry_storage.stage_bytes(data, filename=f"{name}.onnx")
    path, _ = registry_storage.commit(staged)
    signature = LoadedModel.load(str(path)).signature.to_dict()
    model, _ = RegisteredModel.objects.get_or_create(name=name, defaults={"team": team})
    return ModelVersion.objects.create(
        model=model,
        version=version,
        artifact_sha256=staged.sha256,
        artifact_size=staged.size,
        status=status,
        stage=stage,
        signature=signature,
        metadata=metadata or {},
    )


@pytest.fixture(autouse=True)
def batch_store(settings: Any, tmp_path: Path) -> Path:
    settings.BATCH_STORE = tmp_path / "batch"
    settings.BATCH_DATA_DIR = str(tmp_path / "data")
    (tmp_path / "data").mkdir()
    return settings.BATCH_STORE


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def mlp4(db: Any) -> ModelVersion:
    """x FP32 [batch, 4] -> y FP32 [batch, 3], with feature names f0..f3 in its metadata."""
    return ready_version("mlp4", onnx_models.mlp(hidden=8, features=4, classes=3), metadata={"feature_names": FEATURES})


def rows(n: int, *, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": f"k{i}", **{f: float(i % 7) + j / 10 for j, f in enumerate(FEATURES)}} for i in range(start, n)]


def write_csv(path: Path, records: list[dict[str, Any]], *, columns: list[str] | None = None) -> Path:
    columns = columns or list(records[0])
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    return path


def write_parquet(path: Path, records: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    import orjson

    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path
