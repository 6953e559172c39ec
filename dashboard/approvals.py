"""Approval pages: the queue, one request side by side with production, and decisions.

Every decision goes through registry.promotions (the same functions the API calls), so
the four-eyes rule, role and team checks and gates are decided there; a refusal comes
back as a message on the page.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from accounts.roles import APPROVER, has_role
from audit.models import AuditEvent
from config.errors import NotFound
from config.http import client_ip
from dashboard.views import domain_errors_as_messages, page
from registry import gates, promotions, selectors

STATUSES = ("pending", "approved", "rejected", "cancelled")


@login_required
def approval_list(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status", "pending")
    if status not in (*STATUSES, "all"):
        status = "pending"
    queue = selectors.promotion_list(user=request.user, status="" if status == "all" else status)
    page_obj = Paginator(queue, 25).get_page(request.GET.get("page"))
    mine = selectors.promotion_list(user=request.user, mine=True)[:10]
    return page(
        request,
        "dashboard/approvals/list.html",
        {
            "page_obj": page_obj,
            "status": status,
            "statuses": (*STATUSES, "all"),
            "mine": mine,
            "is_approver": has_role(request.user, APPROVER),
            "query": f"status={status}",
        },
    )


def _signature_rows(candidate: dict[str, Any] | None, production: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Inputs and outputs of both versions, paired by name, with what changed."""
    rows = []
    for kind in ("inputs", "outputs"):
        cand = {t.get("name"): t for t in (candidate or {}).get(kind, [])}
        prod = {t.get("name"): t for t in (production or {}).get(kind, [])}
        for name in list(prod) + [n for n in cand if n not in prod]:
            a, b = cand.get(name), prod.get(name)
            change = "same"
            if a is None:
                change = "removed"
            elif b is None:
                change = "added"
            elif _describe(a) != _describe(b):
                change = "changed"
            rows.append(
                {
                    "kind": kind[:-1],
                    "name": name,
                    "candidate": _describe(a),
                    "production": _describe(b),
                    "change": change,
                }
            )
    return rows


def _describe(tensor: dict[str, Any] | None) -> str:
    if tensor is None:
        return ""
    return f"{tensor.get('datatype') or tensor.get('dtype') or '?'} {tensor.get('shape', '')}"


@login_required
def approval_detail(request: HttpRequest, request_id: int) -> HttpResponse:
    try:
        found = selectors.promotion_get(request_id=request_id, user=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from None
    comparison = gates.promotion_comparison(request=found)
    candidate, production = comparison["candidate"], comparison["production"]
    events = AuditEvent.objects.filter(object_type="registry.promotionrequest", object_id=str(found.pk)).order_by(
        "-created_at", "-id"
    )
    is_approver = has_role(request.user, APPROVER)
    return page(
        request,
        "dashboard/approvals/detail.html",
        {
            "req": found,
            "comparison": comparison,
            "candidate": candidate,
            "production": production,
            "signature_rows": _signature_rows(
                candidate and candidate["signature"], production and production["signature"]
            ),
            "failed_gates": [g for g in found.gates if not g.get("ok")],
            "events": events,
            "is_approver": is_approver,
            "is_admin": has_role(request.user, "admin"),
            "own_request": found.requester_id == request.user.pk,
            # Only the buttons that can work: the requester (or anyone the decision's own
            # checks refuse) never sees Approve/Reject.
            "can_decide": promotions.promotion_can_decide(request=found, user=request.user),
        },
    )


@login_required
@require_POST
@domain_errors_as_messages
def approval_decide(request: HttpRequest, request_id: int, decision: str) -> HttpResponse:
    comment = request.POST.get("comment", "")
    if decision == "approve":
        promotions.promotion_approve(
            request_id=request_id,
            reviewer=request.user,
            comment=comment,
            override_reason=request.POST.get("override_reason") or None,
            source_ip=client_ip(request),
        )
        messages.success(request, f"Promotion request #{request_id} approved.")
    elif decision == "reject":
        promotions.promotion_reject(
            request_id=request_id, reviewer=request.user, comment=comment, source_ip=client_ip(request)
        )
        messages.success(request, f"Promotion request #{request_id} rejected.")
    elif decision == "cancel":
        promotions.promotion_cancel(
            request_id=request_id, user=request.user, comment=comment, source_ip=client_ip(request)
        )
        messages.success(request, f"Promotion request #{request_id} cancelled.")
    else:
        raise Http404("unknown decision")
    return redirect("dash-approval", request_id=request_id)


@login_required
@require_POST
@domain_errors_as_messages
def promotion_request(request: HttpRequest, name: str, version: int) -> HttpResponse:
    found = selectors.version_get(model_name=name, version=version, user=request.user)
    created = promotions.promotion_request_create(
        version=found,
        to_stage=request.POST.get("to_stage", ""),
        justification=request.POST.get("justification", ""),
        user=request.user,
        source_ip=client_ip(request),
    )
    messages.success(request, f"Promotion request #{created.pk} sent to the approvers.")
    return redirect("dash-approval", request_id=created.pk)


@login_required
@require_POST
@domain_errors_as_messages
def production_rollback(request: HttpRequest, name: str) -> HttpResponse:
    done = promotions.production_rollback(
        model=selectors.model_get(name=name, user=request.user),
        user=request.user,
        comment=request.POST.get("comment", ""),
        source_ip=client_ip(request),
    )
    messages.success(request, f"{name}: v{done.version.version} is back in Production.")
    return redirect("dash-model", name=name)
