"""The Spark helper: a local Spark session scores a DataFrame with a version fetched from the platform."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from accounts.services import user_token_create
from inference.runtime.session import LoadedModel
from registry import storage as registry_storage
from tests.batch.conftest import FEATURES, ready_version
from tests.onnx_models import mlp

pyspark = pytest.importorskip("pyspark")
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spark():
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java")
    from pyspark.sql import SparkSession

    # Executors' Python workers import inference.batch.spark from this checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[1]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "100")
        # A short-lived JVM: the C1 compiler alone and the serial collector start the session
        # and run the job in 40 s instead of 67 s on the loaded 2-core machine (medians of two).
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .getOrCreate()
    )
    # py4j logs "Closing down clientserver connection" at INFO from a finalizer that runs
    # at interpreter exit, after pytest closed its capture streams: a "Logging error"
    # traceback below the test summary. Its INFO lines say nothing a test needs.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    yield session
    session.stop()


def test_predict_udf_scores_a_dataframe_with_the_production_version(spark, live_server, engineer, tmp_path):
    from inference.batch.spark import predict_udf

    version = ready_version(
        "mlp4", mlp(hidden=8, features=4, classes=3), stage="Production", metadata={"feature_names": FEATURES}
    )
    _, token = user_token_create(user=engineer, name="spark")
    x = np.random.default_rng(0).normal(size=(250, 4)).astype(np.float32)
    frame = spark.createDataFrame([(i, *map(float, row)) for i, row in enumerate(x)], ["id", *FEATURES])
    cache = tmp_path / "executor-cache"
    score = predict_udf(base_url=live_server.url, token=token, model="mlp4@production", cache_dir=str(cache))
    out = frame.withColumn("y", score(*FEATURES)).orderBy("id").collect()

    path = registry_storage.artifact_path(version.artifact_sha256)
    expected = LoadedModel.load(str(path)).predict({"x": x})["y"]
    got = np.array([row["y"] for row in out])
    assert got.shape == (250, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert [p.name for p in cache.iterdir()] == [f"{version.artifact_sha256}.onnx"]  # fetched by digest, once
