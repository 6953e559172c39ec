"""The hot path's process-local cache: routing tables and API keys, no ORM per request.

Tables and keys are loaded from the database on first use and kept in plain dicts.
Every change (services.py) calls `changed()`: this process drops its cache at once and,
when the transaction commits, bumps a shared generation counter. Each process compares
that counter at most once a second (`CHECK_EVERY_S`) and drops its cache when it moved,
so a change (a new split, a revoked key) reaches every web process within about a
second. The counter lives in Redis (the Django cache) on the full stack, and in a small
file under MODELHUB_DATA_DIR on the embedded default, where gunicorn's processes share
no Redis.

A miss reads the database; a connection that died with a PostgreSQL restart is dropped
and the read tried once more, and while the database is down a miss answers 503 with
Retry-After (hits keep serving from the cache).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from accounts.keys import key_hash, key_matches, key_prefix
from config.errors import ServiceUnavailable
from inference.router import SHADOW, RoutingTable, table_build

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0
GENERATION_KEY = "modelhub:serving:generation"
_MAX_KEYS = 10_000


@dataclass(frozen=True)
class KeyEntry:
    prefix: str
    name: str
    endpoints: frozenset[str]


def _generation_file() -> Path:
    return Path(settings.DATA_DIR) / "serving.generation"


def shared_generation() -> str | None:
    """The shared counter now; None when it cannot be read (then the cache is kept)."""
    try:
        if settings.REDIS_URL:
            from django.core.cache import cache

            return str(cache.get(GENERATION_KEY, "0"))
        path = _generation_file()
        return path.read_text() if path.exists() else "0"
    except Exception as exc:  # noqa: BLE001 - a Redis hiccup must not fail predictions
        log.warning("could not read the serving generation: %s", exc)
        return None


def shared_generation_bump() -> None:
    try:
        if settings.REDIS_URL:
            from django.core.cache import cache

            cache.add(GENERATION_KEY, 0, timeout=None)
            cache.incr(GENERATION_KEY)
            return
        path = _generation_file()
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_text(str(time.time_ns()))
        tmp.replace(path)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not bump the serving generation: %s", exc)


DB_RETRY_AFTER_S = 2


def _from_database(load: Any, arg: str) -> Any:
    """`load(arg)` on this thread's connection; a dead connection is dropped and tried once more.

    After PostgreSQL restarts, every connection a process kept (CONN_MAX_AGE) is dead, and
    the raw WSGI/ASGI fronts skip Django's request signals that would drop it: the first
    query on it raises InterfaceError/OperationalError. Close it and run the load once on
    a fresh connection; when that fails too the database is down: 503 with Retry-After
    (nothing is cached, so the next request tries again).
    """
    from django.db import InterfaceError, OperationalError, connection

    try:
        return load(arg)
    except (InterfaceError, OperationalError) as exc:
        log.warning("routing cache: database error (%s); reconnecting once", str(exc).strip()[:200])
        _close_quietly(connection)
    try:
        return load(arg)
    except (InterfaceError, OperationalError) as exc:
        _close_quietly(connection)
        raise ServiceUnavailable(
            f"the database is unreachable: {str(exc).strip()[:200] or type(exc).__name__}",
            retry_after_s=DB_RETRY_AFTER_S,
        ) from exc


def _close_quietly(connection: Any) -> None:
    try:
        connection.close()
    except Exception:  # noqa: BLE001 - closing a dead connection may fail too; it is dropped either way
        connection.connection = None


class EdgeCache:
    def __init__(self, *, check_every_s: float = CHECK_EVERY_S) -> None:
        self.check_every_s = check_every_s
        self._tables: dict[str, RoutingTable | None] = {}
        self._keys: dict[str, KeyEntry | None] = {}
        self._generation: str | None = None
        self._next_check = 0.0
        self._build_lock = threading.Lock()
        # Outside Django's request cycle (the raw WSGI front) nobody closes stale database
        # connections; do it before a cache miss touches the ORM.
        self.close_stale_connections = False

    def clear(self) -> None:
        self._tables = {}
        self._keys = {}

    def _fresh(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.check_every_s
        generation = shared_generation()
        if generation is None:
            # Redis away: keep serving from the cache, and do not pay the socket timeout
            # on every second's first request.
            self._next_check = now + 5 * self.check_every_s
        elif generation != self._generation:
            if self._generation is not None:
                self.clear()
                unload_retired()
            self._generation = generation

    def _close_stale(self) -> None:
        if self.close_stale_connections:
            from django.db import close_old_connections, connection

            # Inside a transaction (a test's, or a caller's atomic block) closing would
            # break it; a dead connection is still caught by _from_database's retry.
            if not connection.in_atomic_block:
                close_old_connections()

    def table(self, name: str) -> RoutingTable | None:
        """The endpoint's routing table, None when there is no such endpoint."""
        self._fresh()
        tables = self._tables
        try:
            return tables[name]
        except KeyError:
            pass
        with self._build_lock:
            if name in self._tables:
                return self._tables[name]
            self._close_stale()
            table = _from_database(table_load, name)
            if len(self._tables) > _MAX_KEYS:
                self._tables = {}
            self._tables[name] = table
            return table

    def api_key(self, raw: str) -> KeyEntry | None:
        """The key's entry if it is a valid, unrevoked application key, else None."""
        self._fresh()
        hashed = key_hash(raw)
        keys = self._keys
        try:
            return keys[hashed]
        except KeyError:
            pass
        self._close_stale()
        entry = _from_database(key_load, raw)
        if len(self._keys) > _MAX_KEYS:
            self._keys = {}
        self._keys[hashed] = entry
        return entry


edge_cache = EdgeCache()


def unload_retired() -> None:
    """Drop this process's sessions of deployments that left every split (one query)."""
    from inference.transport import in_process_transport  # apps not loaded at import (raw fronts)

    transport = in_process_transport()
    loaded = {int(key[1:]) for key in transport.loaded_keys()}
    if not loaded:
        return
    try:
        from inference.models import Deployment  # apps not loaded at import (raw fronts)

        retired = set(
            Deployment.objects.filter(pk__in=loaded, state=Deployment.State.RETIRED).values_list("pk", flat=True)
        )
    except Exception as exc:  # noqa: BLE001 - a database hiccup must not fail predictions
        log.warning("could not read retired deployments: %s", exc)
        return
    for deployment_id in retired:
        transport.unload_key(f"d{deployment_id}")


def changed() -> None:
    """Called by every service that changes what the edge serves."""
    edge_cache.clear()

    def after_commit() -> None:
        edge_cache.clear()
        shared_generation_bump()
        unload_retired()

    transaction.on_commit(after_commit)


def key_load(raw: str) -> KeyEntry | None:
    from inference.models import ApiKey  # apps not loaded at import (raw fronts)

    prefix = key_prefix(raw, "app")
    if prefix is None:
        return None
    row = ApiKey.objects.filter(prefix=prefix, revoked_at__isnull=True).first()
    if row is None or not key_matches(raw, row.hashed):
        return None
    return KeyEntry(prefix=prefix, name=row.name, endpoints=frozenset(row.endpoints.values_list("name", flat=True)))


def table_load(name: str) -> RoutingTable | None:
    """Build an endpoint's table from its current revision (or the latest fully ready one)."""
    from inference.models import Deployment, Endpoint  # apps not loaded at import (raw fronts)
    from inference.pipeline import PipelineConfigError, pipeline_compile  # apps not loaded at import (raw fronts)
    from inference.runtime.outliers import scorer_from_reference  # apps not loaded at import (raw fronts)
    from inference.runtime.signature import Signature  # apps not loaded at import (raw fronts)
    from inference.selectors import deployment_spec  # apps not loaded at import (raw fronts)

    endpoint = Endpoint.objects.filter(name=name).first()
    if endpoint is None:
        return None
    revisions = list(endpoint.revisions.order_by("-revision")[:50])
    current = next((r for r in revisions if r.is_current), None)
    ids = {route["deployment"] for r in revisions for route in r.routes if route.get("deployment")}
    deployments = {
        d.pk: d for d in Deployment.objects.filter(pk__in=ids).select_related("endpoint", "model_version__model")
    }
    # Pipeline routes (inference.pipelines.serving): compiled once per table build.
    piped: dict[int, Any] = {}

    def pipeline_route(route: dict[str, Any], role: str, weight: int) -> Any:
        from inference.pipelines.serving import route_spec  # apps not loaded at import (raw fronts)

        key = route["pipeline_version"]
        if key not in piped:
            piped[key] = route_spec(route, endpoint=name, role=role, weight=weight)
        return piped[key]

    def ready(route: dict[str, Any]) -> bool:
        if route.get("pipeline"):
            return pipeline_route(route, route["role"], route["weight"]) is not None
        d = deployments.get(route["deployment"])
        if d is None:
            return False
        # A retired in-process deployment loaded fine before and loads again lazily, so an
        # older revision can still serve while a newer one waits for the pool.
        return d.state == Deployment.State.READY or (
            d.state == Deployment.State.RETIRED and d.placement == Deployment.Placement.IN_PROCESS and bool(d.provider)
        )

    effective = None
    if current is not None:
        for revision in revisions:
            if revision.revision > current.revision:
                continue
            if all(ready(route) for route in revision.routes if route["role"] != SHADOW):
                effective = revision
                break
    chosen: list[tuple[Any, str, int]] = []
    if effective is not None:
        chosen += [(r, r["role"], r["weight"]) for r in effective.routes if r["role"] != SHADOW]
    if current is not None:
        # Shadows take no traffic, so the current revision's ready ones run even while
        # its primary and canaries are still loading.
        chosen += [(r, SHADOW, 0) for r in current.routes if r["role"] == SHADOW and ready(r)]
    specs = []
    signatures: dict[int, Any] = {}
    pipelines: dict[int, Any] = {}
    metadata: dict[int, Any] = {}
    outliers: dict[int, Any] = {}
    for route, role, weight in chosen:
        if route.get("pipeline"):
            from inference.pipelines.executor import GRAPHS  # apps not loaded at import (raw fronts)
            from inference.pipelines.serving import route_placement, spec_for  # apps not loaded at import (raw fronts)

            built = pipeline_route(route, role, weight)
            if built is None:
                continue
            graph_spec, graph_signature = built
            placement, device = route_placement(route)
            # The same graph under this route's role and weight (a pipeline may be a shadow).
            spec = spec_for(
                GRAPHS[graph_spec.deployment_id],
                route["pipeline_version"],
                endpoint=name,
                role=role,
                weight=weight,
                placement=placement,
                device=device,
            )
            specs.append((spec, role, weight))
            signatures[spec.deployment_id] = graph_signature
            continue
        deployment = deployments[route["deployment"]]
        spec = deployment_spec(deployment, role=role, weight=weight)
        specs.append((spec, role, weight))
        signatures[spec.deployment_id] = Signature.from_dict(spec.signature)
        version = deployment.model_version
        metadata[spec.deployment_id] = {
            "class_names": (version.metadata or {}).get("class_names"),
            "stage": version.stage,
        }
        try:
            pipeline = pipeline_compile(
                endpoint.preprocessing,
                endpoint.postprocessing,
                signature=signatures[spec.deployment_id],
                metadata=version.metadata or {},
            )
        except PipelineConfigError as exc:
            log.error("endpoint %s: pre/post-processing does not fit %s: %s", name, version, exc)
            pipeline = None
        if pipeline is not None and not pipeline.empty:
            pipelines[spec.deployment_id] = pipeline
        if endpoint.outlier_scoring:
            scorer = scorer_from_reference(version.reference_stats, signatures[spec.deployment_id].inputs)
            if scorer is not None:
                outliers[spec.deployment_id] = scorer
    table = table_build(
        endpoint=endpoint.name,
        revision=effective.revision if effective is not None else 0,
        routes=specs,
        sticky_header=endpoint.sticky_header,
        require_key=endpoint.require_key,
        max_rows=endpoint.max_rows_per_request,
        timeout_ms=endpoint.timeout_ms,
        pending_revision=current.revision if current is not None and effective is not current else None,
        pipelines=pipelines,
        signatures=signatures,
        outliers=outliers,
    )
    return table
