"""The model a batch chunk runs: loaded once per process through the serving runtime's repository.

No second loader: `ModelRepository.load` is the same load-and-warm the serving path uses,
and loading an equal spec again is a no-op. A worker keeps the last few models only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from django.conf import settings

from inference.runtime.repository import ModelRepository
from inference.runtime.session import Device, LoadedModel
from registry.storage import artifact_path

_REPOSITORY = ModelRepository()
_RECENT: OrderedDict[str, None] = OrderedDict()
_LOCK = threading.Lock()


def model_for(*, sha256: str, name: str, version: str, device: str) -> LoadedModel:
    """The warm model with this artifact digest on `device`, loading it on first use."""
    key = f"batch:{sha256}:{device}"
    dev: Device = "gpu" if device == "gpu" else "cpu"
    threads = settings.BATCH_INTRA_OP_THREADS or None
    served = _REPOSITORY.load(
        key,
        str(artifact_path(sha256)),
        device=dev,
        intra_op_threads=threads,
        warm_runs=1,
        name=name,
        version=version,
        sha256=sha256,
    )
    with _LOCK:
        _RECENT[key] = None
        _RECENT.move_to_end(key)
        evict = list(_RECENT)[: -settings.BATCH_MODELS_KEPT] if len(_RECENT) > settings.BATCH_MODELS_KEPT else []
        for old in evict:
            _RECENT.pop(old, None)
    for old in evict:
        _REPOSITORY.unload(old)
    return served.model
