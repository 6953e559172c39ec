"""Serving processes freeze their start-up heap, so full GC passes skip it (config/heap.py)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from config import heap
from inference.asgi import EdgeASGI


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the suite runs with an ordinary heap


def test_settle_moves_what_is_alive_out_of_the_collected_generations() -> None:
    survivors = [[i] for i in range(1000)]  # containers the collector tracks
    frozen = heap.settle()
    assert frozen >= len(survivors)
    # Frozen objects are still freed by reference counting (another thread of the test
    # process may drop one meanwhile): the count can shrink, never grow, after a freeze.
    assert len(survivors) <= gc.get_freeze_count() <= frozen
    assert not any(s is survivors[0] for s in gc.get_objects(generation=2))


def test_a_later_settle_collects_cycles_dropped_since_the_last_one() -> None:
    """A worker settles after every model load: what an unload left in cycles must not stay frozen."""

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the cyclic collector can free it
    probe = weakref.ref(a)
    heap.settle()  # the cycle is alive here, so it is frozen
    del a, b
    heap.settle()
    assert probe() is None


def test_settle_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELHUB_GC_FREEZE", "0")
    assert heap.settle() == 0
    assert gc.get_freeze_count() == 0


@pytest.mark.django_db(transaction=True)
def test_the_asgi_front_settles_the_heap_once_started(iris_v1: Any) -> None:
    """After lifespan start-up (imports and warm-up done) the heap is frozen, before traffic."""
    app = EdgeASGI(lambda *_: None)  # type: ignore[arg-type,return-value]
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []
    frozen_at_startup: list[int] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            frozen_at_startup.append(gc.get_freeze_count())

    async def run() -> None:
        try:
            await app({"type": "lifespan"}, receive, send)
        finally:
            from django.db import connections

            connections.close_all()

    asyncio.run(run())
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert frozen_at_startup[0] > 10_000  # Django, NumPy and the ORT bindings, at least
