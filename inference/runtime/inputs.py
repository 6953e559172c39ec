"""Generated example inputs for smoke tests and warm-up runs.

The data is deterministic (seeded) and kept in a small, safe range per datatype:
floats in [-1, 1), integers in [0, 4) so that index-like inputs (Gather, Embedding)
stay in bounds, booleans at random and the string "a" for BYTES.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inference.runtime.signature import Signature, TensorSpec, numpy_dtype


def example_shape(spec: TensorSpec, *, batch_size: int = 1) -> tuple[int, ...]:
    """The spec's shape with the batch dim set to `batch_size` and other free dims to 1."""
    return tuple((batch_size if i == 0 else 1) if d == -1 else d for i, d in enumerate(spec.shape))


def example_tensor(
    spec: TensorSpec, *, batch_size: int = 1, rng: np.random.Generator | None = None
) -> np.ndarray[Any, Any]:
    """One deterministic tensor that fits `spec`."""
    rng = rng if rng is not None else np.random.default_rng(0)
    shape = example_shape(spec, batch_size=batch_size)
    dtype = numpy_dtype(spec.datatype)
    if spec.datatype == "BYTES":
        return np.full(shape, "a", dtype=object)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype.kind in "iu":
        return rng.integers(0, 4, size=shape).astype(dtype)
    return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)


def example_inputs(signature: Signature, *, batch_size: int = 1, seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    """Deterministic inputs for every input of `signature`."""
    rng = np.random.default_rng(seed)
    return {spec.name: example_tensor(spec, batch_size=batch_size, rng=rng) for spec in signature.inputs}
