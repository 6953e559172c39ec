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
    try:
        graph = compile_version(version)
        executor.load_models(graph)
    except GraphError as exc:
        log.error("endpoint %s: pipeline %s no longer checks: %s", endpoint, version, exc.message)
        return None
    except Exception as exc:  # noqa: BLE001 - a model that fails to load: the route is not ready
        log.error("endpoint %s: pipeline %s could not load its models: %s", endpoint, version, exc)
        return None
    return spec_for(graph, version.pk, endpoint=endpoint, role=role, weight=weight), signature(graph)


def spec_for(graph: CompiledPipeline, version_id: int, *, endpoint: str, role: str, weight: int) -> DeploymentSpec:
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
    )
    executor.GRAPHS[spec.deployment_id] = graph
    return spec


def signature(graph: CompiledPipeline) -> Signature:
    return Signature.from_dict(graph.signature_dict())
