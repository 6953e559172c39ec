"""The demo model: logistic regression on scikit-learn's bundled iris data, as ONNX."""

from __future__ import annotations

import numpy as np

DEMO_MODEL_NAME = "iris-classifier"
# ONNX Runtime 1.31 reads IR versions up to 13; onnx 1.23 writes 14 unless told otherwise.
IR_VERSION = 9


def iris_onnx() -> tuple[bytes, dict[str, object]]:
    """ONNX bytes and metadata (accuracy on a held-out split) of a freshly trained model."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    data = load_iris()
    x = data.data.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, data.target, test_size=0.3, random_state=0, stratify=data.target
    )
    classifier = LogisticRegression(max_iter=500).fit(x_train, y_train)
    onx = to_onnx(
        classifier,
        x_train[:1],
        options={id(classifier): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    onx.ir_version = IR_VERSION
    metadata = {
        "metrics": {"accuracy": float(classifier.score(x_test, y_test))},
        "params": {"estimator": "LogisticRegression", "max_iter": 500},
        "training_data": "sklearn.datasets.load_iris (70/30 split, random_state=0)",
        "feature_names": list(data.feature_names),
        "class_names": [str(name) for name in data.target_names],
    }
    return onx.SerializeToString(), metadata
