"""A feature lookup's second source: a Feast feature server over its HTTP API.

No Feast client runs in the platform's process (feast requires pandas<3; the platform pins
pandas 3): a batch's entity keys go to the server in one `POST {url}/get-online-features`
over a pooled urllib3 connection (urllib3 is already a runtime dependency, via
tritonclient), bounded by the step's `timeout_ms` and never retried. The answer is one
column per name of `metadata.feature_names`, each with `values`, `statuses` and
`event_timestamps` per entity, in the order the entities were sent.

A value counts only with status PRESENT and a non-null value; NOT_FOUND, OUTSIDE_MAX_AGE
and NULL (or PRESENT with a null) leave a hole that the step's `on_missing` fills or
refuses (inference.pipelines.features.fetch). An entity with no PRESENT feature is
unknown. Its age is that of its oldest value, for the step's `max_age_s`.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
import urllib3

if TYPE_CHECKING:
    from inference.pipelines.graph import FeatureLookup

PATH = "/get-online-features"
# Connections kept per server; more concurrent lookups open extra ones, closed after use.
POOL_SIZE = 16


class FeastError(Exception):
    """The server did not answer in time, or answered with an error or an unreadable body."""


_pool: urllib3.PoolManager | None = None
_pool_lock = threading.Lock()


def pool() -> urllib3.PoolManager:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = urllib3.PoolManager(num_pools=32, maxsize=POOL_SIZE, block=False, retries=False)
        return _pool


def _key_value(value: Any) -> Any:
    """An entity key as Feast's JSON wants it: ints stay ints, bytes become text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (int, str)):
        return value
    return str(value)


def _epoch(stamp: Any) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


Found = dict[str, tuple[list[float | None], float | None]]


def read(step: FeatureLookup, entities: dict[str, Any], timeout_s: float) -> tuple[Found, dict[str, str]]:
    """(found, why) for the unique entities of a batch ({text: key value}): found maps an
    entity to its values (None for a hole) and age; why says, for an entity with holes or
    with none served but not plainly NOT_FOUND, which feature Feast did not serve and why."""
    source = step.feast
    assert source is not None
    body: dict[str, Any] = {"entities": {source.entity_key: [_key_value(v) for v in entities.values()]}}
    if source.feature_service:
        body["feature_service"] = source.feature_service
    else:
        body["features"] = list(source.feature_refs)
    try:
        reply = pool().request(
            "POST",
            source.url + PATH,
            body=orjson.dumps(body),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            timeout=urllib3.Timeout(total=timeout_s),
            retries=False,
            redirect=False,  # a redirect is an error answer: only the listed server is called
        )
    except urllib3.exceptions.HTTPError as exc:  # refused, timed out, reset
        raise FeastError(f"{source.url}: {type(exc).__name__}: {exc}") from None
    if reply.status != 200:
        raise FeastError(f"{source.url} answered {reply.status}: {reply.data[:300].decode('utf-8', 'replace')}")
    try:
        answer = orjson.loads(reply.data)
        names = answer["metadata"]["feature_names"]
        columns = dict(zip(names, answer["results"], strict=True))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise FeastError(f"{source.url}: not an answer of get-online-features ({exc})") from None
    found: Found = {}
    why: dict[str, str] = {}
    for i, entity in enumerate(entities):
        values: list[float | None] = []
        stamps: list[float] = []
        statuses: set[str] = set()
        for feature in step.features:
            column = columns.get(feature)
            try:
                status = column["statuses"][i] if column else "NOT_SERVED"
                value = column["values"][i] if column else None
                stamp = _epoch(column["event_timestamps"][i]) if column else None
            except (KeyError, IndexError, TypeError):
                raise FeastError(f"{source.url}: column {feature!r} is not of the batch's length") from None
            statuses.add(status)
            if status == "PRESENT" and isinstance(value, (int, float)):  # a bool counts as 0 / 1
                values.append(float(value))
                if stamp is not None:
                    stamps.append(stamp)
                continue
            values.append(None)
            if status == "PRESENT":
                status = "NULL"
            why.setdefault(entity, f'has feature "{feature}" {status} in Feast')
        if all(v is None for v in values):
            if statuses == {"NOT_FOUND"}:
                why.pop(entity, None)  # plainly unknown
            continue
        found[entity] = (values, min(stamps) if stamps else None)
    return found, why
