"""Routing: which deployment answers a request. Pure values, no Django, no I/O.

A `RoutingTable` is built once per endpoint and policy revision (see
`inference.routing_cache`) and is read-only afterwards, so any number of request threads
share it without locks. Choosing costs a hash or a random number and a bisect.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.errors import ModelhubError
from inference.spec import DeploymentSpec

PRIMARY, CANARY, SHADOW = "primary", "canary", "shadow"


class RoutingError(ModelhubError):
    """No deployment can take the request; `status` and `code` say how to answer."""

    status = 503
    code = "no_ready_deployment"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message, status=status, code=code)


@dataclass(frozen=True)
class Route:
    spec: DeploymentSpec
    role: str
    weight: int


@dataclass(frozen=True)
class RoutingTable:
    """One endpoint's split as of one revision, with everything the hot path needs.

    `routes` are the ready non-shadow deployments that take traffic by weight, `shadows`
    the ready shadow deployments that get a copy. `pins` maps "N" (when only one model
    has version N here) and "model:N" to a deployment, for explicit version pinning.
    """

    endpoint: str
    revision: int
    routes: tuple[Route, ...]
    shadows: tuple[Route, ...] = ()
    sticky_header: str = ""  # the WSGI environ key, e.g. "HTTP_X_ROUTING_KEY"
    require_key: bool = True
    max_rows: int = 1024
    timeout_s: float = 5.0
    # The revision that is current but not yet taking traffic (its deployments are still
    # loading); None when the current revision is the one routing.
    pending_revision: int | None = None
    pipelines: Mapping[int, Any] = field(default_factory=dict)  # deployment id -> Pipeline
    signatures: Mapping[int, Any] = field(default_factory=dict)  # deployment id -> Signature
    # deployment id -> OutlierScorer, for endpoints that score requests (outlier_scoring)
    outliers: Mapping[int, Any] = field(default_factory=dict)
    pins: Mapping[str, DeploymentSpec] = field(default_factory=dict)
    _cumulative: tuple[int, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        total = 0
        cumulative = []
        for route in self.routes:
            total += route.weight
            cumulative.append(total)
        object.__setattr__(self, "_cumulative", tuple(cumulative))

    @property
    def total_weight(self) -> int:
        return self._cumulative[-1] if self._cumulative else 0

    def choose(
        self, *, sticky_key: str | None = None, pin: str | None = None, rng: random.Random | None = None
    ) -> DeploymentSpec:
        """The deployment for one request: pinned, else sticky by key, else weighted at random."""
        if pin:
            spec = self.pins.get(pin)
            if spec is None:
                known = ", ".join(sorted(k for k in self.pins if ":" not in k)) or "none"
                raise RoutingError(
                    f'endpoint "{self.endpoint}" serves no ready version {pin!r}; ready versions: {known}',
                    status=404,
                    code="unknown_version",
                )
            return spec
        total = self.total_weight
        if total <= 0:
            waiting = f" (revision {self.pending_revision} is still loading)" if self.pending_revision else ""
            raise RoutingError(f'endpoint "{self.endpoint}" has no ready deployment{waiting}')
        if sticky_key:
            point = sticky_point(sticky_key, self.revision, total)
        else:
            point = (rng or random).random() * total
        return self.routes[bisect.bisect_right(self._cumulative, point)].spec

    def pipeline_for(self, spec: DeploymentSpec) -> Any:
        return self.pipelines.get(spec.deployment_id)

    def signature_for(self, spec: DeploymentSpec) -> Any:
        return self.signatures.get(spec.deployment_id)

    def all_specs(self) -> tuple[DeploymentSpec, ...]:
        return tuple(r.spec for r in self.routes) + tuple(r.spec for r in self.shadows)


def sticky_point(key: str, revision: int, total: int) -> float:
    """Where a routing key falls in [0, total): stable for one revision, spread uniformly.

    The revision is part of the hash so that a changed split reshuffles callers instead
    of moving only those at the edges of the weight ranges.
    """
    digest = hashlib.blake2b(f"{revision}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * total


def sticky_environ_key(header: str) -> str:
    """ "X-Routing-Key" -> "HTTP_X_ROUTING_KEY", the form WSGI and Django's META use."""
    return "HTTP_" + header.upper().replace("-", "_") if header else ""


def table_build(
    *,
    endpoint: str,
    revision: int,
    routes: list[tuple[DeploymentSpec, str, int]],
    sticky_header: str = "",
    require_key: bool = True,
    max_rows: int = 1024,
    timeout_ms: int = 5000,
    pending_revision: int | None = None,
    pipelines: Mapping[int, Any] | None = None,
    signatures: Mapping[int, Any] | None = None,
    outliers: Mapping[int, Any] | None = None,
) -> RoutingTable:
    """A table from (spec, role, weight) triples of ready deployments."""
    taking = tuple(Route(spec, role, weight) for spec, role, weight in routes if role != SHADOW and weight > 0)
    shadows = tuple(Route(spec, role, 0) for spec, role, _ in routes if role == SHADOW)
    pins: dict[str, DeploymentSpec] = {}
    numbers: dict[str, int] = {}
    for spec, _, _ in routes:
        pins[f"{spec.model}:{spec.version}"] = spec
        numbers[str(spec.version)] = numbers.get(str(spec.version), 0) + 1
    for spec, _, _ in routes:
        if numbers[str(spec.version)] == 1:
            pins[str(spec.version)] = spec
    return RoutingTable(
        endpoint=endpoint,
        revision=revision,
        routes=taking,
        shadows=shadows,
        sticky_header=sticky_environ_key(sticky_header),
        require_key=require_key,
        max_rows=max_rows,
        timeout_s=timeout_ms / 1000.0,
        pending_revision=pending_revision,
        pipelines=dict(pipelines or {}),
        signatures=dict(signatures or {}),
        outliers=dict(outliers or {}),
        pins=pins,
    )
