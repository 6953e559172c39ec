"""Keep CPython's cyclic garbage collector off the serving path's tail latency.

A serving process holds a few hundred thousand long-lived objects after start-up (Django,
NumPy, ONNX Runtime's bindings, the routing cache). Requests in flight are promoted into
the oldest generation while they wait for the batcher, and once enough have been promoted
CPython runs a full collection, which walks every one of those start-up objects with the
GIL held: 40-70 ms on the 2-core benchmark machine, during which the event loop answers
nothing. That was the largest single cause of the mlp p99 tail in bench/ (docs/benchmarks.md).

`settle()` collects once and then moves everything alive into the permanent generation
(`gc.freeze()`), which later collections skip: a full collection then walks only what was
allocated after start-up (1-2 ms measured). Frozen objects are not collected as cycles
until the next `settle()`, which unfreezes first: an inference worker settles after each
model load, and what an earlier unload left in cycles is collected then, not kept forever.
Call it after start-up work (imports, warm-up, a model load), never per request: the full
`gc.collect()` in it costs tens of milliseconds.
"""

from __future__ import annotations

import gc

from config.env import env_bool


def enabled() -> bool:
    """`MODELHUB_GC_FREEZE=0` turns settling off (to measure what it buys)."""
    return env_bool("MODELHUB_GC_FREEZE", True)


def settle() -> int:
    """Unfreeze, collect, then freeze what survived; returns the frozen count (0 when off)."""
    if not enabled():
        return 0
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
