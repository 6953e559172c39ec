"""Small, deterministic ONNX models for every test suite, built in code (never downloaded).

Each builder returns the serialized model as bytes; `write_model` puts bytes on disk.
IR versions are always set explicitly: onnx 1.23 writes IR 14 by default and
onnxruntime 1.31 reads at most 13.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 9
OPSET = 17
PRODUCER = "modelhub-tests"
PRODUCER_VERSION = "1.0"

_ELEM_TYPES = {
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "FP16": TensorProto.FLOAT16,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "BOOL": TensorProto.BOOL,
    "BYTES": TensorProto.STRING,
}


def write_model(directory: str | Path, name: str, data: bytes) -> Path:
    """Write model bytes to `directory/name` and return the path."""
    path = Path(directory) / name
    path.write_bytes(data)
    return path


def _model(
    graph: onnx.GraphProto,
    *,
    ir_version: int = IR_VERSION,
    opsets: dict[str, int] | None = None,
) -> onnx.ModelProto:
    imports = [helper.make_opsetid(domain, version) for domain, version in (opsets or {"": OPSET}).items()]
    model = helper.make_model(graph, opset_imports=imports, producer_name=PRODUCER)
    model.producer_version = PRODUCER_VERSION
    model.ir_version = ir_version
    return model


def _weights(name: str, shape: tuple[int, ...], seed: int) -> onnx.TensorProto:
    values = np.random.default_rng(seed).normal(0.0, 0.5, size=shape).astype(np.float32)
    return numpy_helper.from_array(values, name)


def tiny_classifier_model(*, ir_version: int = IR_VERSION, features: int = 10, seed: int = 1) -> onnx.ModelProto:
    """`features` FP32 inputs -> 2 classes; `seed` picks other weights (a second version)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])
    probabilities = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["logits_raw"]),
        helper.make_node("Add", ["logits_raw", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_classifier",
        [x],
        [probabilities, label],
        initializer=[_weights("W", (features, 2), seed), _weights("B", (2,), seed + 1)],
    )
    return _model(graph, ir_version=ir_version)


def tiny_classifier() -> bytes:
    """10 FP32 features -> "probabilities" FP32 [batch, 2] (softmax) and "label" INT64 [batch]."""
    return tiny_classifier_model().SerializeToString()


def mlp(hidden: int = 64, features: int = 32, classes: int = 8) -> bytes:
    """x FP32 [batch, features] -> Gemm+Relu -> Gemm -> "y" FP32 [batch, classes]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", classes])
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "B1"], ["h"]),
        helper.make_node("Relu", ["h"], ["a"]),
        helper.make_node("Gemm", ["a", "W2", "B2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [x],
        [y],
        initializer=[
            _weights("W1", (features, hidden), 3),
            _weights("B1", (hidden,), 4),
            _weights("W2", (hidden, classes), 5),
            _weights("B2", (classes,), 6),
        ],
    )
    return _model(graph).SerializeToString()


def linear(weights: np.ndarray, bias: np.ndarray) -> bytes:
    """x FP32 [batch, d] -> "y" = x @ weights + bias, FP32 [batch, k] (weights (d, k))."""
    d, k = weights.shape
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", d])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", k])
    initializers = [
        numpy_helper.from_array(np.asarray(weights, dtype=np.float32), "W"),
        numpy_helper.from_array(np.asarray(bias, dtype=np.float32).reshape(k), "B"),
    ]
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "W", "B"], ["y"])], "linear", [x], [y], initializers)
    return _model(graph).SerializeToString()


def identity(dtype: str = "FP32") -> bytes:
    """x -> Identity -> y, both of V2 datatype `dtype` with dynamic dims ["batch", "n"]."""
    elem = _ELEM_TYPES[dtype]
    x = helper.make_tensor_value_info("x", elem, ["batch", "n"])
    y = helper.make_tensor_value_info("y", elem, ["batch", "n"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    return _model(graph).SerializeToString()


def two_inputs() -> bytes:
    """Inputs "a" FP32 [batch, 3] and "b" INT64 [batch, 1] -> "y" = a * float(b), FP32 [batch, 3]."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3])
    b = helper.make_tensor_value_info("b", TensorProto.INT64, ["batch", 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    nodes = [
        helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["a", "b_float"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "two_inputs", [a, b], [y])
    return _model(graph).SerializeToString()


def iris_sklearn(*, zipmap: bool = False) -> bytes:
    """LogisticRegression on scikit-learn's bundled iris, converted by skl2onnx.

    Input "X" FP32 [batch, 4]; outputs "label" INT64 [batch] and "probabilities" FP32
    [batch, 3]. With `zipmap=True` probabilities are a sequence of maps instead, which
    the serving API cannot return.
    """
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, target = load_iris(return_X_y=True)
    classifier = LogisticRegression(max_iter=500).fit(features, target)
    model = to_onnx(
        classifier,
        features[:1].astype(np.float32),
        options={id(classifier): {"zipmap": zipmap}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )
    model.ir_version = IR_VERSION
    return model.SerializeToString()


def slow_model(depth: int = 64, width: int = 1024) -> bytes:
    """x FP32 [batch, width] through `depth` MatMuls with a width x width matrix.

    Fast for a few rows, about a second per 1,000 rows on one core: send a big batch
    to get a run long enough to test deadlines. The weight comes from ConstantOfShape,
    so the file stays small.
    """
    fill = helper.make_tensor("fill", TensorProto.FLOAT, [1], [1.0 / width])
    nodes = [helper.make_node("ConstantOfShape", ["w_shape"], ["w"], value=fill)]
    previous = "x"
    for i in range(depth):
        output = "y" if i == depth - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [previous, "w"], [output]))
        previous = output
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=[numpy_helper.from_array(np.array([width, width], np.int64), "w_shape")],
    )
    return _model(graph).SerializeToString()


def sparse_bomb(count: int = 5, elements: int = 250_000_000) -> bytes:
    """A ~300-byte model whose sparse initializers densify to count x elements x 4 bytes.

    The defaults expand to 5 GB at load time. Each initializer stays under onnxruntime's
    2 GB per-initializer cap, so it really is the total that hurts.
    """
    sparse = []
    for i in range(count):
        values = helper.make_tensor(f"big{i}", TensorProto.FLOAT, [1], [1.0])
        indices = helper.make_tensor(f"big{i}_idx", TensorProto.INT64, [1], [0])
        sparse.append(helper.make_sparse_tensor(values, indices, [elements]))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [elements])
    node = helper.make_node("Sum", [f"big{i}" for i in range(count)], ["y"])
    graph = helper.make_graph([node], "sparse_bomb", [], [y], sparse_initializer=sparse)
    return _model(graph).SerializeToString()


def external_data(location: str = "../../etc/passwd") -> bytes:
    """An initializer whose data lives in an external file at `location`."""
    weight = onnx.TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[4])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "external", [x], [y], initializer=[weight])
    return _model(graph).SerializeToString()


def custom_domain_op(domain: str = "com.example.evil") -> bytes:
    """A node from an operator domain that neither ONNX nor onnxruntime knows."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain=domain)
    graph = helper.make_graph([node], "custom", [x], [y])
    return _model(graph, opsets={"": OPSET, domain: 1}).SerializeToString()


def truncated() -> bytes:
    """The first 60% of a valid model: cut inside an initializer's raw data."""
    data = mlp()
    return data[: len(data) * 6 // 10]


def not_onnx() -> bytes:
    """A CSV file, as uploaded by mistake."""
    return b"sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n"


def future_ir() -> bytes:
    """The tiny classifier stamped with IR version 14, newer than onnxruntime 1.31 reads."""
    return tiny_classifier_model(ir_version=14).SerializeToString()


def lookup(table_size: int, offset: float = 0.0) -> bytes:
    """X FP32 [-1, 4] -> y = table[int(X)] with table = offset, offset + 1, ...: a Gather
    whose indices come from the input.

    Validation's generated inputs lie in [-1, 1) (indices 0), so every table size passes;
    real iris rows (values up to about 8) fail at run time when the table is smaller than
    that: a model that validates and then answers errors (a broken rollout candidate).
    Tables of different sizes give the same answers where both have the index; another
    `offset` gives other answers (a candidate that disagrees with the stable version).
    """
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    table = numpy_helper.from_array(np.arange(table_size, dtype=np.float32) + np.float32(offset), "table")
    nodes = [
        helper.make_node("Cast", ["X"], ["idx"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "idx"], ["y"], axis=0),
    ]
    graph = helper.make_graph(nodes, f"lookup{table_size}", [x], [y], initializer=[table])
    return _model(graph).SerializeToString()
