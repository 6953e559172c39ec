"""Feedback: a reward for a request, attributed to the arms the ledger says it was served by."""

from __future__ import annotations

import math
import time
from typing import Any

import redis
from django.conf import settings

from common.errors import BadRequest, ModelhubError
from inference.bandits import ledger
from inference.bandits.store import Feedback, store

RETRY_AFTER_S = 2.0


class UnknownRequest(ModelhubError):
    status = 404
    code = "unknown_request"


class InvalidFeedback(BadRequest):
    code = "invalid_feedback"


class FeedbackUnavailable(ModelhubError):
    status = 503
    code = "unavailable"


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidFeedback(f"{field}: expected a number, got {value!r}", details={"field": field})
    return float(value)


def parse_body(body: Any) -> tuple[str, list[float]]:
    """{"request_id": str, "reward": number} or {"request_id": str, "rewards": [number, ...]}
    (one per instance of the request)."""
    if not isinstance(body, dict):
        raise InvalidFeedback('expected an object {"request_id": ..., "reward": number}')
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id or len(request_id) > 200:
        raise InvalidFeedback(
            "request_id: expected the request id of a prediction (a string)", details={"field": "request_id"}
        )
    if ("reward" in body) == ("rewards" in body):
        raise InvalidFeedback('give exactly one of "reward" (a number) or "rewards" (a number per instance)')
    if "reward" in body:
        return request_id, [_number(body["reward"], "reward")]
    rewards = body["rewards"]
    if not isinstance(rewards, list) or not rewards or len(rewards) > 100_000:
        raise InvalidFeedback("rewards: expected a non-empty list of numbers", details={"field": "rewards"})
    return request_id, [_number(value, f"rewards[{i}]") for i, value in enumerate(rewards)]


def feedback(endpoint: str, request_id: str, rewards: list[float]) -> Feedback:
    """Teach the routers that decided `request_id` on `endpoint` its reward, once.

    404 when the ledger has no decision for that request on that endpoint (never made,
    past the retention, or another endpoint's); 400 when a Thompson-Bernoulli router is
    given a reward outside [0, 1]. A second feedback for the same request changes nothing
    and says so (status "duplicate", with the first reward).
    """
    try:
        return _feedback(endpoint, request_id, rewards)
    except redis.RedisError as exc:  # the ledger is away: try again later (nothing was applied)
        raise FeedbackUnavailable(
            f"the bandit state store is unreachable ({type(exc).__name__}); send the feedback again",
            retry_after=RETRY_AFTER_S,
        ) from exc


def _feedback(endpoint: str, request_id: str, rewards: list[float]) -> Feedback:
    backend = store()
    ledger.flush_pending()  # decided by this process and still buffered: written first
    entries = _entries(backend, endpoint, request_id)
    if not entries and ledger.buffering():
        # Decided by another process, its entry may still wait in that process's buffer
        # for at most one flush interval (docs/pipelines.md, "Feedback"): read once more.
        time.sleep(2 * float(settings.BANDIT_LEDGER_FLUSH_MS) / 1000.0)
        entries = _entries(backend, endpoint, request_id)
    if not entries:
        raise UnknownRequest(
            f'no bandit decision for request "{request_id}" on endpoint "{endpoint}" '
            "(unknown, or older than the feedback retention)"
        )
    if any(entry.bernoulli for entry in entries) and any(not 0.0 <= r <= 1.0 for r in rewards):
        raise InvalidFeedback(
            "reward: a thompson_bernoulli router takes rewards in [0, 1]", details={"field": "reward"}
        )
    result = backend.apply(request_id, entries, rewards)
    if result.status == "unknown":
        raise UnknownRequest(f'no bandit decision for request "{request_id}" (it expired just now)')
    return result


def _entries(backend: Any, endpoint: str, request_id: str) -> list[Any]:
    entries, _ = backend.entries(request_id)
    return [entry for entry in entries if entry.endpoint == endpoint]


def reply_body(request_id: str, result: Feedback) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "status": result.status,
        "duplicate": result.status == "duplicate",
        "reward": result.reward,
        "count": result.count,
        "attributed": [{"router": e.router_key, "arm": e.arm, "propensity": e.propensity} for e in result.entries],
    }
