"""A pipeline as one route of an endpoint's routing table.

A traffic route {"pipeline": "fraud", "version": 2, "role": "primary", "weight": 90} is
served by a `DeploymentSpec` with placement "pipeline" and deployment id -<pipeline
version id> (no Deployment row: the pipeline's model steps have their own sessions), so
splits, pins (`?version=fraud:2`), sticky routing and shadows treat it like a version.
Built when the table is (re)built: stage aliases are resolved again then, so
"churn@production" follows promotions; a graph that no longer checks (a promoted
version with another signature) is logged and the route is not ready, so the last fully
ready revision keeps serving.
"""

from __future__ import annotations

import logging
from typing import Any

from inference.pipelines import executor
from inference.pipelines.graph import CompiledPipeline, GraphError
from inference.pipelines.models import PipelineVersion
from inference.pipelines.services import compile_version
from inference.runtime.signature import Signature
from inference.transport import DeploymentSpec

log = logging.getLogger(__name__)


def route_spec(
    route: dict[str, Any], *, endpoint: str, role: str, weight: int
) -> tuple[DeploymentSpec, Signature] | None:
    """The spec and input/output signature of a pipeline route; None when it cannot serve."""
    version = PipelineVersion.objects.select_related("pipeline").filter(pk=route.get("pipeline_version")).first()
    if version is None:
        return None
    placement, device = route_placement(route)
    try:
        graph = compile_version(version)
        # In-process steps load here; worker-pool steps were assigned when the route was
        # saved, and the pool reconciler keeps them assigned (inference/reconcile.py).
        executor.load_models(graph, placement, device, assign=False)
    except GraphError as exc:
        log.error("endpoint %s: pipeline %s no longer checks: %s", endpoint, version, exc.message)
        return None
    except Exception as exc:  # noqa: BLE001 - a model that fails to load: the route is not ready
        log.error("endpoint %s: pipeline %s could not load its models: %s", endpoint, version, exc)
        return None
    spec = spec_for(graph, version.pk, endpoint=endpoint, role=role, weight=weight, placement=placement, device=device)
    return spec, signature(graph)


def route_placement(route: dict[str, Any]) -> tuple[str, str]:
    """Where a pipeline route's model steps run (unless a step says): placement and device."""
    return str(route.get("placement") or executor.IN_PROCESS), str(route.get("device") or "cpu")


def spec_for(
    graph: CompiledPipeline,
    version_id: int,
    *,
    endpoint: str,
    role: str,
    weight: int,
    placement: str = "in_process",
    device: str = "cpu",
) -> DeploymentSpec:
    spec = DeploymentSpec(
        deployment_id=-version_id,
        endpoint=endpoint,
        model=graph.name,
        version=graph.version,
        role=role,
        weight=weight,
        artifact_sha256="",
        artifact_path="",
        signature=graph.signature_dict(),
        placement=executor.PLACEMENT,
        step_placement=placement,
        device=device,
    )
    executor.register(spec.deployment_id, graph)
    return spec


def signature(graph: CompiledPipeline) -> Signature:
    return Signature.from_dict(graph.signature_dict())


def pool_step_specs() -> dict[str, DeploymentSpec]:
    """The worker-pool specs of the model steps the current revisions' pipeline routes
    serve (a route of placement worker_pool, or a step that names it), by key: the desired
    state the pool reconciler adds to the deployments' (inference/reconcile.py)."""
    from inference.models import TrafficPolicyRevision  # the revisions own the routes

    specs: dict[str, DeploymentSpec] = {}
    compiled: dict[tuple[int, str, str], list[DeploymentSpec]] = {}
    for routes in TrafficPolicyRevision.objects.filter(is_current=True).values_list("routes", flat=True):
        for route in routes:
            if not route.get("pipeline_version"):
                continue
            placement, device = route_placement(route)
            key = (route["pipeline_version"], placement, device)
            if key not in compiled:
                compiled[key] = _pool_specs_of(route["pipeline_version"], placement, device)
            specs.update((s.key, s) for s in compiled[key])
    return specs


def _pool_specs_of(version_id: int, placement: str, device: str) -> list[DeploymentSpec]:
    version = PipelineVersion.objects.select_related("pipeline").filter(pk=version_id).first()
    if version is None:
        return []
    try:
        graph = compile_version(version)
    except GraphError as exc:
        log.warning("pipeline %s no longer checks, its worker-pool steps are not assigned: %s", version, exc.message)
        return []
    return [s for s in executor.step_specs(graph, placement, device) if s.placement == executor.WORKER_POOL]
