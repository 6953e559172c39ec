"""The version page's batch section: start a job (upload a file) and the version's jobs."""

from __future__ import annotations

from typing import Any

from django import template

from inference.batch import selectors

register = template.Library()


@register.inclusion_tag("dashboard/batch/_version_jobs.html", takes_context=True)
def batch_jobs_for_version(context: dict[str, Any], version: Any) -> dict[str, Any]:
    request = context.get("request")
    user = getattr(request, "user", None)
    jobs = list(selectors.job_list(user=user, version_id=version.pk)[:10]) if user is not None else []
    return {
        "version": version,
        "jobs": jobs,
        "can_write": context.get("can_write", False),
        "ready": version.status == "ready",
        "passthrough_hint": "id",
    }
