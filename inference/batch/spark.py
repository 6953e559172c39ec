"""Spark entry point: `predict_udf` scores a Spark DataFrame with a Modelhub version.

    from inference.batch.spark import predict_udf
    score = predict_udf(base_url="https://modelhub.example", token=TOKEN, model="churn@production")
    df.withColumn("churn", score(*feature_columns))

The driver resolves the version once through the REST API (a stage alias becomes the
newest ready version in that stage) and hands the executors only its artifact's sha256 and
download URL. Each executor process downloads the artifact once into a local cache named
by its digest (inference/runtime/artifacts.py, the same client as the inference
workers'), checks the digest, loads it with the serving runtime (`LoadedModel`: no
Django here, as in `inference/runtime/`), and runs ONNX Runtime on the Arrow batches
Spark passes to a pandas UDF. Optional: needs `pyspark` (and pandas), see docs/batch.md.
"""

from __future__ import annotations

import json
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference.runtime.artifacts import ArtifactCache
from inference.runtime.session import LoadedModel
from inference.runtime.signature import Signature, numpy_dtype

_ALIASES = {"production": "Production", "staging": "Staging"}
_MODELS: dict[str, LoadedModel] = {}
_CACHES: dict[Path, ArtifactCache] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class VersionRef:
    model: str
    version: int
    sha256: str
    artifact_url: str
    signature: dict[str, Any]


def _get(url: str, token: str, timeout_s: float) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - the platform's URL
        return json.loads(response.read())


def version_resolve(
    *, base_url: str, token: str, model: str, version: int | None = None, timeout_s: float = 30.0
) -> VersionRef:
    """The ready version to score with: `model` + `version`, or `model@production`/`@staging`."""
    base = base_url.rstrip("/")
    if "@" in model:
        name, alias = model.split("@", 1)
        stage = _ALIASES.get(alias.lower())
        if stage is None or version is not None:
            raise ValueError(f"model: use name@production or name@staging without a version, got {model!r}")
        query = urllib.parse.urlencode({"stage": stage, "status": "ready"})
        found = _get(f"{base}/api/v1/models/{urllib.parse.quote(name)}/versions/?{query}", token, timeout_s)
        results = found.get("results", found) if isinstance(found, dict) else found
        if not results:
            raise LookupError(f"model {name!r} has no ready version in {stage}")
        detail = results[0]
    else:
        if version is None:
            raise ValueError("version: required unless model names a stage alias")
        name = model
        detail = _get(f"{base}/api/v1/models/{urllib.parse.quote(name)}/versions/{int(version)}/", token, timeout_s)
        if detail.get("status") != "ready":
            raise LookupError(f"{name} version {version} is {detail.get('status')}; only a ready version can score")
    number = int(detail["version"])
    return VersionRef(
        model=name,
        version=number,
        sha256=str(detail["artifact_sha256"]),
        artifact_url=f"{base}/api/v1/models/{urllib.parse.quote(name)}/versions/{number}/artifact",
        signature=dict(detail["signature"]),
    )


def _model(ref: VersionRef, token: str, cache_dir: Path) -> LoadedModel:
    """One loaded model per executor process and digest."""
    with _LOCK:
        loaded = _MODELS.get(ref.sha256)
        if loaded is None:
            cache = _CACHES.setdefault(cache_dir, ArtifactCache(cache_dir))
            path = cache.get(ref.sha256, ref.artifact_url, token=token)
            loaded = LoadedModel.load(str(path), name=ref.model, version=str(ref.version), sha256=ref.sha256)
            _MODELS[ref.sha256] = loaded
        return loaded


def predict_udf(
    *,
    base_url: str,
    token: str,
    model: str,
    version: int | None = None,
    output: str | None = None,
    cache_dir: str | None = None,
    batch_rows: int = 1024,
) -> Any:
    """A pandas UDF: feature columns in (the model's single 2-D input, in order), one output out.

    A 1-D output (or [n, 1]) becomes a double column, a wider one an array<double>.
    """
    # Optional dependencies (requirements-spark.txt): needed only when a UDF is built.
    import pandas as pd
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import ArrayType, DoubleType

    ref = version_resolve(base_url=base_url, token=token, model=model, version=version)
    signature = Signature.from_dict(ref.signature)
    if len(signature.inputs) != 1 or signature.inputs[0].rank != 2:
        raise ValueError(f"predict_udf needs a model with one 2-D input; {ref.model} has {signature.input_names}")
    spec = signature.inputs[0]
    out_name = output or signature.output_names[0]
    out_spec = signature.output(out_name)
    scalar = out_spec.rank == 1 or (out_spec.rank == 2 and out_spec.shape[1] == 1)
    dtype = numpy_dtype(spec.datatype)
    cache = Path(cache_dir or Path(tempfile.gettempdir()) / "modelhub-artifacts")

    def score(columns: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.Series]:
        loaded = _model(ref, token, cache)
        for batch in columns:
            features = np.column_stack([np.asarray(c, dtype=dtype) for c in batch])
            parts = []
            for start in range(0, len(features), batch_rows):
                result = loaded.predict({spec.name: features[start : start + batch_rows]}, outputs=[out_name])
                parts.append(result[out_name])
            values = np.concatenate(parts) if parts else np.empty((0,))
            if scalar:
                yield pd.Series(values.reshape(-1).astype(np.float64))
            else:
                yield pd.Series(list(values.reshape(len(values), -1).astype(np.float64)))

    # Spark picks the UDF kind (iterator of batches) from the hints; this module's hints
    # are strings (postponed annotations) naming a late import, so give it the objects.
    score.__annotations__ = {"columns": Iterator[tuple[pd.Series, ...]], "return": Iterator[pd.Series]}
    return_type = DoubleType() if scalar else ArrayType(DoubleType())
    return pandas_udf(score, return_type)  # type: ignore[call-overload]
