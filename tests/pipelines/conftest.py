"""The fraud example of issue #14: features in Redis, two versions of a fraud model."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from django.conf import settings

from inference.pipelines import features
from tests.inference.conftest import fresh_edge_cache, version_add  # noqa: F401 - the autouse fixture
from tests.onnx_models import tiny_classifier_model

FEATURES = ["avg_amount", "tx_count", "country_risk"]
CARDS = {
    101: {"avg_amount": 40.0, "tx_count": 12.0, "country_risk": 0.1},
    102: {"avg_amount": 900.0, "tx_count": 3.0, "country_risk": 0.8},
    103: {"avg_amount": 15.0, "tx_count": 40.0, "country_risk": 0.3},
}


def fraud_bytes(seed: int) -> bytes:
    """x FP32 [batch, 4] (amount, avg_amount, tx_count, ratio) -> probabilities [batch, 2], label."""
    return tiny_classifier_model(features=4, seed=seed).SerializeToString()


@pytest.fixture
def fraud_versions(engineer: Any) -> list[Any]:
    return [version_add("fraud", fraud_bytes(seed), engineer) for seed in (11, 21)]


@pytest.fixture
def feature_set() -> Iterator[str]:
    """A feature set of its own in the test Redis (or the database when there is none)."""
    name = f"cards-{uuid.uuid4().hex[:8]}"
    url = settings.REDIS_URL  # as it was: a test may point the store elsewhere
    features.features_load(feature_set=name, key="card_id", rows=[{"card_id": k, **v} for k, v in CARDS.items()])
    yield name
    if url:
        import redis

        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(f"{features.PREFIX}{name}:*"))
        if keys:
            client.delete(*keys)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local port that accepts connections and never answers (a hung store or server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield int(sock.getsockname()[1])
    sock.close()


SCALE = {"mean": [500.0, 300.0, 20.0, 2.0], "std": [500.0, 400.0, 15.0, 3.0]}


def fraud_spec(feature_set: str, threshold: float, on_missing: str = "refuse") -> dict[str, Any]:
    lookup: dict[str, Any] = {
        "name": "lookup",
        "kind": "feature_lookup",
        "key": "card_id",
        "feature_set": feature_set,
        "features": FEATURES,
        "timeout_ms": 200,
        "on_missing": on_missing,
    }
    if on_missing == "default":
        lookup["defaults"] = {"avg_amount": 100.0, "tx_count": 1.0, "country_risk": 0.5}
    return {
        "inputs": [
            {"name": "card_id", "datatype": "INT64", "shape": [-1]},
            {"name": "amount", "datatype": "FP32", "shape": [-1]},
        ],
        "outputs": ["fraud_score", "action"],
        "steps": [
            # Listed out of order on purpose: the graph orders steps by the tensors they read.
            {
                "name": "business",
                "kind": "transform",
                "rules": [
                    "fraud_score = proba[1]",
                    f"if fraud_score > {threshold!r} and amount > 100 then action = 'review' else action = 'approve'",
                ],
            },
            lookup,
            {
                "name": "prep",
                "kind": "transform",
                "rules": ["if avg_amount > 0 then ratio = amount / avg_amount else ratio = 0.0"],
                "ops": [
                    {"op": "stack", "fields": ["amount", "avg_amount", "tx_count", "ratio"], "output": "features"},
                    {"op": "scale", "field": "features", **SCALE},
                ],
            },
            {
                "name": "ensemble",
                "kind": "ensemble",
                "members": [{"model": "fraud", "version": 1}, {"model": "fraud", "version": 2}],
                "combine": "mean",
                "inputs": {"x": "features"},
                "outputs": {"probabilities": "proba"},
            },
        ],
    }


def expected_scores(card_ids: list[int], amounts: list[float]) -> np.ndarray:
    """The same graph computed by hand with two plain ONNX Runtime sessions."""
    rows = []
    for card, amount in zip(card_ids, amounts, strict=True):
        f = CARDS[card]
        ratio = amount / f["avg_amount"]
        rows.append([amount, f["avg_amount"], f["tx_count"], ratio])
    x = (np.array(rows, dtype=np.float32) - np.array(SCALE["mean"])) / np.array(SCALE["std"])
    x = x.astype(np.float32)
    probs = [ort.InferenceSession(fraud_bytes(seed)).run(["probabilities"], {"x": x})[0] for seed in (11, 21)]
    return np.mean(probs, axis=0)[:, 1]
