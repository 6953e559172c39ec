"""Shared pieces of the bandit tests: a clean Redis namespace, a simulated environment."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.conf import settings

from inference.bandits import ledger, router
from inference.bandits.feedback import feedback
from inference.bandits.ledger import LedgerWriter
from inference.bandits.store import PREFIX


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def forget_redis_state() -> None:
    client = redis_client()
    for key in client.scan_iter(PREFIX + "*"):
        client.delete(key)


@pytest.fixture
def bandit_state(settings: Any) -> Iterator[None]:
    """No Redis bandit keys before or after; every decision re-reads the statistics."""
    settings.BANDIT_REFRESH_S = 0.0
    url = settings.REDIS_URL
    if url:
        forget_redis_state()
    router.seed(7)
    yield
    if url:
        settings.REDIS_URL = url
        forget_redis_state()
    router._routers.clear()


@pytest.fixture
def ledger_in_test_thread(settings: Any) -> Iterator[LedgerWriter]:
    """This process's ledger writer swapped for one whose thread flushes only when told (an
    hour): every flush runs in the test's thread, inside its transaction. Needed with the
    database store (settings.REDIS_URL = ""): the thread's own connection would not see the
    test's rows, nor they its, and would wait on their locks."""
    writer = LedgerWriter(capacity=int(settings.BANDIT_LEDGER_BUFFER), interval_s=3600.0)
    previous, ledger._writer = ledger._writer, writer
    yield writer
    writer.close()
    ledger._writer = previous


def simulate(
    key: str, config: dict[str, Any], reward: Callable[[str, random.Random], float], steps: int, *, endpoint: str = "e"
) -> list[str]:
    """`steps` decisions of router `key`, each rewarded at once; the arms chosen, in order."""
    env = random.Random(11)
    chosen = []
    for i in range(steps):
        request_id = f"{key}-{i}"
        decision = router.decide(key, config["arms"], config, request_id, endpoint=endpoint)
        chosen.append(decision.arm)
        feedback(endpoint, request_id, [reward(decision.arm, env)])
    return chosen
