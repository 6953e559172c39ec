"""Density: what the repository charges a loaded model tracks the resident memory its
session really adds (measured around the load, freed memory handed back first), both
before the load (the estimate the budget is checked against) and after it (the charge)."""

from __future__ import annotations

from pathlib import Path

from onnx import TensorProto, helper

from inference.runtime.repository import ModelRepository, release_memory, rss_bytes
from tests import onnx_models

MIB = 1 << 20


def _expanded(features: int = 4096, outputs: int = 2048) -> bytes:
    """A file of a few hundred bytes whose session holds a 32 MiB weight: a scalar expanded
    to [features, outputs] (ONNX Runtime folds it into a constant at load)."""
    graph = helper.make_graph(
        [helper.make_node("Expand", ["half", "shape"], ["W"]), helper.make_node("MatMul", ["x", "W"], ["y"])],
        "expanded",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])],
        initializer=[
            helper.make_tensor("half", TensorProto.FLOAT, [1], [0.5]),
            helper.make_tensor("shape", TensorProto.INT64, [2], [features, outputs]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def _load_measured(repository: ModelRepository, key: str, path: str) -> tuple[int, int]:
    """(the model's charge, the RSS it added once loaded, warm and trimmed)."""
    release_memory()
    before = rss_bytes()
    served = repository.load(key, path, intra_op_threads=1)
    release_memory()
    return served.memory_bytes, rss_bytes() - before


def _warm_repository(tmp_path: Path) -> ModelRepository:
    """A repository whose process has paid ONNX Runtime's one-time start-up already."""
    repository = ModelRepository(budget_bytes=1 << 50)
    repository.load("first", str(onnx_models.write_model(tmp_path, "t.onnx", onnx_models.tiny_classifier())))
    return repository


def test_the_estimate_and_the_charge_of_an_mlp_are_within_a_quarter_of_its_measured_memory(tmp_path) -> None:
    path = str(onnx_models.write_model(tmp_path, "mlp.onnx", onnx_models.mlp(hidden=4096, features=2048)))  # 32 MiB
    repository = _warm_repository(tmp_path)
    estimate = repository.estimate_bytes(path)

    charged, measured = _load_measured(repository, "mlp", path)

    assert measured > 24 * MIB, f"the session added only {measured / MIB:.1f} MiB"
    assert abs(estimate - measured) <= 0.25 * measured, f"estimate {estimate / MIB:.1f} MiB"
    assert abs(charged - measured) <= 0.25 * measured, f"charged {charged / MIB:.1f} MiB, measured {measured / MIB:.1f}"
    repository.close()


def test_a_session_much_larger_than_its_file_is_charged_what_it_measured(tmp_path) -> None:
    path = str(onnx_models.write_model(tmp_path, "expanded.onnx", _expanded()))
    repository = _warm_repository(tmp_path)
    assert repository.estimate_bytes(path) < 2 * MIB  # its file says nothing of its weight

    charged, measured = _load_measured(repository, "expanded", path)

    assert measured > 24 * MIB, f"the session added only {measured / MIB:.1f} MiB"
    assert abs(charged - measured) <= 0.25 * measured, f"charged {charged / MIB:.1f} MiB, measured {measured / MIB:.1f}"
    repository.close()
