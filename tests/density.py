"""Same-size model files and a memory budget that holds a given number of them, measured
with a real ONNX Runtime load on this machine (the charge per model is machine-dependent)."""

from __future__ import annotations

from pathlib import Path

from inference.runtime.repository import ModelRepository
from tests import onnx_models

FEATURES = 512


def model_files(directory: Path, count: int) -> list[str]:
    """`count` files of one ~8 MiB MLP: x [batch, 512] -> y [batch, 8]."""
    data = onnx_models.mlp(hidden=4096, features=FEATURES)
    return [str(onnx_models.write_model(directory, f"m{i}.onnx", data)) for i in range(count)]


def charge_per_model(path: str) -> int:
    """What a repository with a budget charges for one of these models (loaded twice: the
    first load of a process also pays ONNX Runtime's start-up, which is not the model's)."""
    repository = ModelRepository(budget_bytes=1 << 50)
    repository.load("probe", path, intra_op_threads=1)
    repository.unload("probe")
    charge = repository.load("probe", path, intra_op_threads=1).memory_bytes
    repository.close()
    return charge


def budget_for(models: float, path: str) -> int:
    """A budget that holds `models` of them (use x.5: room for x, not for x + 1)."""
    return int(charge_per_model(path) * models)
