"""The built-in online feature store: Redis hashes (the database on the embedded default).

Key layout (Redis):

    mh:feat:{feature_set}:{entity}     hash  feature -> value (as text), "_ts" -> epoch seconds written
    mh:feat:{feature_set}:__stats__    hash  feature -> mean over the last load (reference statistics)

On the embedded default (no REDIS_URL) the same rows live in the `FeatureRow` table
(`entity` "__stats__" holds the statistics). A lookup reads a whole batch in one round
trip: one Redis pipeline of HMGETs (plus the statistics when `on_missing` is "impute"),
or one SELECT. A lookup never waits past its `timeout_ms`: the Redis client for it has
that socket timeout, and an unreachable store is a missing entity for every row (the
step's `on_missing` decides: defaults, imputed means, or a 503 when it refuses).
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.errors import ModelhubError
from inference.pipelines import feast_source

if TYPE_CHECKING:
    from inference.pipelines.graph import FeatureLookup

log = logging.getLogger(__name__)
PREFIX = "mh:feat:"
STATS = "__stats__"
TS = "_ts"


class UnknownEntity(ModelhubError):
    status = 404
    code = "unknown_entity"


class StoreUnavailable(ModelhubError):
    status = 503
    code = "feature_store_unavailable"


def entity_key(feature_set: str, entity: str) -> str:
    return f"{PREFIX}{feature_set}:{entity}"


def _entity_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


_clients: dict[tuple[str, float], Any] = {}
_clients_lock = threading.Lock()
_stats_seen: dict[str, dict[str, float]] = {}  # last statistics read, per feature set (Redis away)


def _redis(url: str, timeout_s: float) -> Any:
    import redis

    with _clients_lock:
        client = _clients.get((url, timeout_s))
        if client is None:
            client = _clients[(url, timeout_s)] = redis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
            )
        return client


def _redis_url() -> str:
    from django.conf import settings

    return str(settings.REDIS_URL or "")


class Lookup:
    """The raw rows of one batch: per unique entity its values (None when missing) and age;
    `why` says, per entity, why a value is missing when the source knows (Feast statuses)."""

    def __init__(
        self,
        found: dict[str, tuple[list[float | None], float | None]],
        stats: dict[str, float],
        why: dict[str, str] | None = None,
    ) -> None:
        self.found, self.stats, self.why = found, stats, why or {}


def _read_redis(url: str, step: FeatureLookup, entities: list[str], timeout_s: float | None = None) -> Lookup:
    client = _redis(url, step.timeout_s if timeout_s is None else timeout_s)
    pipe = client.pipeline(transaction=False)
    for entity in entities:
        pipe.hmget(entity_key(step.feature_set, entity), [*step.features, TS])
    if step.on_missing == "impute":
        pipe.hmget(entity_key(step.feature_set, STATS), list(step.features))
    replies = pipe.execute()  # one round trip for the whole batch
    stats: dict[str, float] = {}
    if step.on_missing == "impute":
        raw_stats = replies.pop()
        stats = {f: float(v) for f, v in zip(step.features, raw_stats, strict=True) if v is not None}
        _stats_seen[step.feature_set] = stats
    found = {}
    for entity, values in zip(entities, replies, strict=True):
        if all(v is None for v in values):
            continue
        ts = values[-1]
        found[entity] = ([None if v is None else float(v) for v in values[:-1]], float(ts) if ts else None)
    return Lookup(found, stats)


def _read_database(step: FeatureLookup, entities: list[str]) -> Lookup:
    from inference.pipelines.models import FeatureRow  # the ORM, only on the embedded default

    wanted = [*entities, STATS] if step.on_missing == "impute" else entities
    found: dict[str, tuple[list[float | None], float | None]] = {}
    stats: dict[str, float] = {}
    for entity, values, updated in FeatureRow.objects.filter(
        feature_set=step.feature_set, entity__in=wanted
    ).values_list("entity", "values", "updated_at"):
        if entity == STATS:
            stats = {f: float(values[f]) for f in step.features if values.get(f) is not None}
            continue
        found[entity] = (
            [None if values.get(f) is None else float(values[f]) for f in step.features],
            updated.timestamp(),
        )
    return Lookup(found, stats)


def fetch(step: FeatureLookup, keys: np.ndarray, *, timeout_s: float | None = None, strict: bool = False) -> np.ndarray:
    """[rows, features] float32 for the entity keys of a batch, `on_missing` applied.

    Batch jobs (inference.batch) look up a whole chunk's keys at once: `timeout_s` replaces
    the step's online `timeout_ms` for that read, and `strict` lets a store error raise (the
    chunk runs again) instead of counting every row as missing."""
    raw_keys = keys.tolist()
    texts = [_entity_text(k) for k in raw_keys]
    unique = dict(zip(texts, raw_keys, strict=True))  # text -> key value (the order of first sight)
    entities = list(unique)
    url = "" if step.source == "feast" else _redis_url()
    unavailable = ""
    try:
        if not step.readable:  # another team's set (or a server no longer allowed): nothing is read
            lookup = Lookup({}, {})
        elif step.source == "feast":
            if entities:
                found, why = feast_source.read(step, unique, step.timeout_s if timeout_s is None else timeout_s)
                lookup = Lookup(found, {}, why)
            else:
                lookup = Lookup({}, {})
        else:
            lookup = _read_redis(url, step, entities, timeout_s) if url else _read_database(step, entities)
    except Exception as exc:  # noqa: BLE001 - an unreachable store is a miss for every row
        import redis

        if strict or (url and not isinstance(exc, redis.RedisError)):
            raise
        if step.source == "feast" and not isinstance(exc, feast_source.FeastError):
            raise
        unavailable = f"{type(exc).__name__}: {str(exc)[:200]}"
        log.warning("feature store unreachable for %s: %s", step.feature_set, unavailable)
        lookup = Lookup({}, _stats_seen.get(step.feature_set, {}))
    now = time.time()
    fill = np.empty(len(step.features), dtype=np.float32)
    for i, feature in enumerate(step.features):
        if step.on_missing == "impute" and feature in lookup.stats:
            fill[i] = lookup.stats[feature]
        elif feature in step.defaults:
            fill[i] = step.defaults[feature]
        else:
            fill[i] = np.nan
    rows: dict[str, np.ndarray] = {}
    for entity in entities:
        entry = lookup.found.get(entity)
        stale = (
            entry is not None
            and step.max_age_s is not None
            and entry[1] is not None
            and now - entry[1] > step.max_age_s
        )
        if entry is None or stale:
            why = (
                lookup.why.get(entity, "is unknown") if entry is None else f"is older than max_age_s={step.max_age_s:g}"
            )
            _missing(step, entity, why, unavailable, fill)
            rows[entity] = fill
            continue
        values = np.array([np.nan if v is None else v for v in entry[0]], dtype=np.float32)
        holes = np.isnan(values)
        if holes.any():
            hole = lookup.why.get(entity) or f'has no feature "{step.features[int(np.argmax(holes))]}"'
            _missing(step, entity, hole, unavailable, fill)
            values = np.where(holes, fill, values)
        rows[entity] = values
    return np.stack([rows[t] for t in texts]) if texts else np.empty((0, len(step.features)), np.float32)


def _missing(step: FeatureLookup, entity: str, why: str, unavailable: str, fill: np.ndarray) -> None:
    if unavailable and step.on_missing == "refuse":
        raise StoreUnavailable(f'step "{step.name}": the feature store is unreachable ({unavailable})', retry_after=1.0)
    if step.on_missing == "refuse":
        raise UnknownEntity(
            f'step "{step.name}": entity "{entity}" of feature set "{step.feature_set}" {why}',
            details={"step": step.name, "feature_set": step.feature_set, "entity": entity},
        )
    if np.isnan(fill).any():
        missing = step.features[int(np.argmax(np.isnan(fill)))]
        if unavailable:
            raise StoreUnavailable(
                f'step "{step.name}": the feature store is unreachable ({unavailable}) and "{missing}" has no '
                "default or reference statistic",
                retry_after=1.0,
            )
        raise UnknownEntity(
            f'step "{step.name}": entity "{entity}" {why} and "{missing}" has no reference statistic to impute',
            details={"step": step.name, "feature_set": step.feature_set, "entity": entity},
        )


# ------------------------------------------------------------------ loading


def rows_from_file(path: str | Path, data: bytes | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a CSV or Parquet file (by its suffix), as dicts."""
    name = str(path).lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data) if data is not None else str(path))
        yield from table.to_pylist()
        return
    text = data.decode("utf-8") if data is not None else Path(path).read_text()
    yield from csv.DictReader(io.StringIO(text))


def name_check(feature_set: str) -> None:
    if not feature_set or ":" in feature_set or len(feature_set) > 100:
        raise ModelhubError(
            "feature set: expected a name without ':' (at most 100 characters)", status=400, code="invalid_features"
        )


def has_data(feature_set: str) -> bool:
    """Whether the store already holds this set (loaded before sets had owners): every load
    with a feature column writes the set's statistics, so one key answers."""
    url = _redis_url()
    if url:
        return bool(_redis(url, 5.0).exists(entity_key(feature_set, STATS)))
    from inference.pipelines.models import FeatureRow  # embedded store only: none on the Redis path

    return FeatureRow.objects.filter(feature_set=feature_set).exists()


def features_load(*, feature_set: str, key: str, rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Write entities (the `key` column) and their numeric features; refresh the statistics.

    Returns {"entities": n, "features": [...]}. A value that is not a number is a 400 naming
    the row and column. Who may load is decided by services.feature_set_load."""
    name_check(feature_set)
    now = time.time()
    entries: dict[str, dict[str, float]] = {}
    for n, row in enumerate(rows):
        if key not in row or row[key] in (None, ""):
            raise ModelhubError(f'row {n + 1}: no key column "{key}"', status=400, code="invalid_features")
        values: dict[str, float] = {}
        for column, value in row.items():
            if column == key or value in (None, ""):
                continue
            try:
                values[str(column)] = float(value)
            except (TypeError, ValueError):
                raise ModelhubError(
                    f'row {n + 1}, column "{column}": {value!r} is not a number', status=400, code="invalid_features"
                ) from None
        entries[_entity_text(row[key])] = values
    columns = sorted({c for v in entries.values() for c in v})
    stats = {c: float(np.mean([v[c] for v in entries.values() if c in v])) for c in columns}
    url = _redis_url()
    if url:
        client = _redis(url, 5.0)
        pipe = client.pipeline(transaction=False)
        for entity, values in entries.items():
            pipe.hset(entity_key(feature_set, entity), mapping={**{k: repr(v) for k, v in values.items()}, TS: now})
        if stats:
            pipe.hset(entity_key(feature_set, STATS), mapping={k: repr(v) for k, v in stats.items()})
        pipe.execute()
    else:
        from django.utils import timezone

        from inference.pipelines.models import FeatureRow  # embedded store only: none on the Redis path

        stamp = timezone.now()
        FeatureRow.objects.bulk_create(
            [FeatureRow(feature_set=feature_set, entity=e, values=v, updated_at=stamp) for e, v in entries.items()]
            + [FeatureRow(feature_set=feature_set, entity=STATS, values=stats, updated_at=stamp)],
            update_conflicts=True,
            unique_fields=["feature_set", "entity"],
            update_fields=["values", "updated_at"],
        )
    return {
        "feature_set": feature_set,
        "entities": len(entries),
        "features": columns,
        "store": "redis" if url else "database",
    }
