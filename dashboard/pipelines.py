"""The Pipelines pages: the list, and one pipeline drawn as a graph with its editor."""

from __future__ import annotations

import json

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.safestring import mark_safe

from accounts.permissions import team_scope
from common.errors import ModelhubError
from dashboard.pipeline_graph import graph_svg
from dashboard.views import page
from inference.pipelines.models import Pipeline
from inference.pipelines.services import compile_version


@login_required
def pipeline_list(request: HttpRequest) -> HttpResponse:
    pipelines = team_scope(Pipeline.objects.select_related("team"), request.user).prefetch_related("versions")
    rows = [{"pipeline": p, "versions": len(p.versions.all())} for p in pipelines]
    return page(request, "dashboard/pipelines/list.html", {"rows": rows})


@login_required
def pipeline_detail(request: HttpRequest, name: str) -> HttpResponse:
    pipeline = team_scope(Pipeline.objects.select_related("team"), request.user).filter(name=name).first()
    if pipeline is None:
        raise Http404(f"no pipeline named {name!r}")
    versions = list(pipeline.versions.order_by("-version"))
    wanted = request.GET.get("version")
    version = next((v for v in versions if str(v.version) == wanted), versions[0] if versions else None)
    svg, problem, steps = "", "", []
    if version is not None:
        try:
            graph = compile_version(version)
            svg = graph_svg(graph)
            steps = [
                {
                    "name": s.name,
                    "kind": s.kind,
                    "owner": s.owner or "",
                    "writes": ", ".join(f"{n}: {t.describe()}" for n, t in s.writes.items()),
                }
                for s in graph.steps.values()
            ]
        except ModelhubError as exc:
            problem = exc.message
    return page(
        request,
        "dashboard/pipelines/detail.html",
        {
            "pipeline": pipeline,
            "version": version,
            "versions": versions,
            "svg": mark_safe(svg),  # noqa: S308 - built by graph_svg, every text escaped
            "problem": problem,
            "steps": steps,
            "spec": json.dumps(version.spec if version else {}, indent=2),
        },
    )
