"""Template helpers: the main navigation and small formatters."""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse

register = template.Library()

# (label, url name, path prefix that marks it current)
NAV = [
    ("Home", "home", "/"),
    ("Models", "dash-models", "/models/"),
    ("Approvals", "dash-approvals", "/approvals/"),
    ("Endpoints", "dash-endpoints", "/endpoints/"),
    ("Pipelines", "dash-pipelines", "/pipelines/"),
    ("Monitoring", "dash-monitoring", "/monitoring/"),
    ("Alerts", "dash-alerts", "/alerts/"),
    ("Batch", "dash-batch", "/batch/"),
]
# Shown to admins only.
ADMIN_NAV = [("People", "dash-people", "/people/")]


@register.inclusion_tag("dashboard/_nav.html", takes_context=True)
def main_nav(context: dict[str, Any]) -> dict[str, Any]:
    request = context.get("request")
    path = request.path if request is not None else ""
    links = []
    entries = NAV + (ADMIN_NAV if context.get("user_role") == "admin" else [])
    for label, name, prefix in entries:
        current = path == "/" if prefix == "/" else path.startswith(prefix)
        links.append({"label": label, "url": reverse(name), "current": current})
    return {"links": links}


@register.filter
def filesize(num: int | None) -> str:
    if num is None:
        return ""
    size = float(num)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


@register.filter
def ms(value: Any) -> str:
    try:
        return f"{float(value):.1f} ms"
    except (TypeError, ValueError):
        return ""


@register.filter
def get(mapping: Any, key: Any) -> Any:
    return mapping.get(key) if isinstance(mapping, dict) else None
