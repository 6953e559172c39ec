"""Promotion workflow: requests, approvals, rejections, cancels and rollback (the gates they
check are in gates.py).

Nothing reaches Production without an approver's decision, and every decision (and
every refused attempt) leaves an audit event. Decisions lock the model row, then the
request, then the versions, in that order, so two approvers deciding at the same moment
are serialised: the second sees the first one's outcome and is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.permissions import is_admin, role_check, team_check
from accounts.roles import APPROVER, ML_ENGINEER
from audit.services import audit_record
from config import queue
from config.errors import Conflict, DomainError, Forbidden, NotFound
from registry import hooks
from registry.errors import InvalidTransition
from registry.gates import gates_evaluate
from registry.models import ModelVersion, PromotionRequest, RegisteredModel
from registry.services import model_version_set_stage

log = logging.getLogger(__name__)

Stage = ModelVersion.Stage
Status = PromotionRequest.Status

# from-stage -> the stages a request may ask for. Anything may be archived.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    Stage.NONE: (Stage.STAGING, Stage.ARCHIVED),
    Stage.STAGING: (Stage.PRODUCTION, Stage.ARCHIVED),
    Stage.PRODUCTION: (Stage.ARCHIVED,),
    Stage.ARCHIVED: (),
}
MAX_TEXT = 10_000


class GatesFailed(Conflict):
    code = "gates_failed"


class RequestNotPending(Conflict):
    code = "not_pending"


# --- requests ---------------------------------------------------------------------------


def _transition_check(version: ModelVersion, to_stage: str) -> None:
    if to_stage not in Stage.values:
        raise InvalidTransition(f"to_stage: expected one of {Stage.values}, got {to_stage!r}")
    if to_stage not in TRANSITIONS[version.stage]:
        allowed = ", ".join(TRANSITIONS[version.stage]) or "nothing"
        raise InvalidTransition(f"{version} is in {version.stage}: it can move to {allowed}, not {to_stage}")
    if to_stage != Stage.ARCHIVED and version.status != ModelVersion.Status.READY:
        raise InvalidTransition(
            f"{version} is {version.status}: only validated (ready) versions can be promoted",
            details={"status": version.status},
        )


def _text(value: str | None, field: str, *, required: bool = False) -> str:
    value = (value or "").strip()
    if required and not value:
        raise DomainError(f"{field}: a written {field} is required")
    if len(value) > MAX_TEXT:
        raise DomainError(f"{field}: at most {MAX_TEXT} characters, got {len(value)}")
    return value


@transaction.atomic
def promotion_request_create(
    *, version: ModelVersion, to_stage: str, justification: str, user: AbstractBaseUser, source_ip: str | None = None
) -> PromotionRequest:
    """Ask for `version` to move to `to_stage`; gates are computed now and shown to reviewers."""
    role_check(user, ML_ENGINEER, to="asking for a promotion")
    justification = _text(justification, "justification", required=True)
    RegisteredModel.objects.select_for_update().get(pk=version.model_id)
    version = ModelVersion.objects.select_related("model").select_for_update(of=("self",)).get(pk=version.pk)
    team_check(user, version.model.team_id, what=f"model {version.model.name!r}")
    _transition_check(version, to_stage)
    try:
        with transaction.atomic():
            request = PromotionRequest.objects.create(
                version=version,
                from_stage=version.stage,
                to_stage=to_stage,
                requester=user,
                justification=justification,
                gates=gates_evaluate(version=version, to_stage=to_stage),
            )
    except IntegrityError:
        raise Conflict(f"{version} already has a pending request to move to {to_stage}") from None
    audit_record(
        actor=user,
        action="promotion.request",
        obj=request,
        after={"version": version.version, "from_stage": version.stage, "to_stage": to_stage, "gates": request.gates},
        source_ip=source_ip,
    )
    _notify_on_commit(request.pk, "promotion.requested")
    return request


def _refusals_audited(action: str) -> Callable[[Callable[..., PromotionRequest]], Callable[..., PromotionRequest]]:
    """Record a refused decision in the audit log, outside the rolled-back transaction."""

    def wrap(decide: Callable[..., PromotionRequest]) -> Callable[..., PromotionRequest]:
        def decorated(*, request_id: int, source_ip: str | None = None, **kwargs: Any) -> PromotionRequest:
            try:
                return decide(request_id=request_id, source_ip=source_ip, **kwargs)
            except DomainError as exc:
                request = PromotionRequest.objects.select_related("version__model").filter(pk=request_id).first()
                if request is not None:
                    actor = kwargs.get("reviewer") or kwargs.get("user")
                    audit_record(
                        actor=actor,
                        action=f"{action}.refused",
                        obj=request,
                        before={"status": request.status},
                        after={"refused": exc.code, "message": exc.message, "http_status": exc.status},
                        source_ip=source_ip,
                    )
                raise

        decorated.__doc__ = decide.__doc__
        decorated.__name__ = decide.__name__
        return decorated

    return wrap


def _lock_request(request_id: int) -> PromotionRequest:
    """Lock the model row, then the request (the same order everywhere: no deadlocks)."""
    model_id = PromotionRequest.objects.filter(pk=request_id).values_list("version__model_id", flat=True).first()
    if model_id is None:
        raise NotFound(f"no promotion request #{request_id}")
    RegisteredModel.objects.select_for_update().get(pk=model_id)
    return PromotionRequest.objects.select_for_update(of=("self",)).select_related("version__model").get(pk=request_id)


def _pending_check(request: PromotionRequest, verb: str) -> None:
    if request.status != Status.PENDING:
        by = f" by {request.reviewer.get_username()}" if request.reviewer else ""
        raise RequestNotPending(
            f"promotion request #{request.pk} is already {request.status}{by}: it cannot be {verb}",
            details={"status": request.status},
        )


def _reviewer_check(request: PromotionRequest, reviewer: AbstractBaseUser, verb: str) -> None:
    role_check(reviewer, APPROVER, to=f"deciding ({verb}) a promotion request")
    team_check(reviewer, request.version.model.team_id, what=f"model {request.version.model.name!r}")
    if request.requester_id == reviewer.pk:
        raise Forbidden(f"you asked for promotion request #{request.pk}: someone else must decide it")


def promotion_can_decide(*, request: PromotionRequest, user: AbstractBaseUser) -> bool:
    """Whether `user` may approve or reject `request` (the same checks the decisions make),
    so that pages offer only the buttons that can work."""
    try:
        _reviewer_check(request, user, "decide")
    except DomainError:
        return False
    return True


@_refusals_audited("promotion.approve")
@transaction.atomic
def promotion_approve(
    *,
    request_id: int,
    reviewer: AbstractBaseUser,
    comment: str = "",
    override_reason: str | None = None,
    source_ip: str | None = None,
) -> PromotionRequest:
    """Approve a pending request and move the version. Gates are evaluated again; a failed
    gate blocks unless an admin gives a written override reason."""
    request = _lock_request(request_id)
    _reviewer_check(request, reviewer, "approve")
    _pending_check(request, "approved")
    comment = _text(comment, "comment")
    override = _text(override_reason, "override_reason")
    version = ModelVersion.objects.select_for_update().get(pk=request.version_id)
    version.model = request.version.model
    _transition_check(version, request.to_stage)
    gates = gates_evaluate(version=version, to_stage=request.to_stage)
    failed = [gate for gate in gates if not gate["ok"]]
    if failed and not override:
        raise GatesFailed(
            "gates failed: "
            + "; ".join(f"{g['name']}: {g['detail']}" for g in failed)
            + " (an admin may approve with a written override_reason)",
            details={"gates": gates},
        )
    if failed and not is_admin(reviewer):
        raise Forbidden("only an admin can override failed gates")
    if override and not failed:
        override = ""  # nothing was overridden; do not record a reason for nothing
    request.gates = gates
    request.status = Status.APPROVED
    request.reviewer = reviewer
    request.comment = comment
    request.override_reason = override
    request.decided_at = timezone.now()
    request.replaced_version = _move(version=version, to_stage=request.to_stage, user=reviewer, source_ip=source_ip)
    request.save(
        update_fields=["gates", "status", "reviewer", "comment", "override_reason", "decided_at", "replaced_version"]
    )
    audit_record(
        actor=reviewer,
        action="promotion.approve",
        obj=request,
        before={"status": Status.PENDING, "stage": request.from_stage},
        after={
            "status": Status.APPROVED,
            "stage": request.to_stage,
            "comment": comment,
            "override_reason": override,
            "failed_gates": [g["name"] for g in failed],
            "replaced_version": request.replaced_version.version if request.replaced_version else None,
        },
        source_ip=source_ip,
    )
    _notify_on_commit(request.pk, "promotion.approved")
    return request


def _move(
    *, version: ModelVersion, to_stage: str, user: AbstractBaseUser, source_ip: str | None
) -> ModelVersion | None:
    """Set the stage (rows locked by the caller); to Production, first move the current
    production version aside per the model's policy. Returns the version moved aside."""
    previous = None
    if to_stage == Stage.ARCHIVED:
        hooks.serving_refuse(version=version)
    if to_stage == Stage.PRODUCTION:
        previous = (
            ModelVersion.objects.select_for_update()
            .filter(model_id=version.model_id, stage=Stage.PRODUCTION)
            .exclude(pk=version.pk)
            .first()
        )
        if previous is not None:
            policy = (version.model.gate_settings or {}).get("previous_production", "archive")
            aside = Stage.STAGING if policy == "staging" else Stage.ARCHIVED
            model_version_set_stage(version=previous, stage=aside, user=user, source_ip=source_ip)
    model_version_set_stage(version=version, stage=to_stage, user=user, source_ip=source_ip)
    if previous is not None:
        previous.model = version.model
    hooks.stage_changed(hooks.StageChange(version=version, stage=to_stage, previous=previous, user=user))
    return previous


@_refusals_audited("promotion.reject")
@transaction.atomic
def promotion_reject(
    *, request_id: int, reviewer: AbstractBaseUser, comment: str = "", source_ip: str | None = None
) -> PromotionRequest:
    request = _lock_request(request_id)
    _reviewer_check(request, reviewer, "reject")
    _pending_check(request, "rejected")
    request.status = Status.REJECTED
    request.reviewer = reviewer
    request.comment = _text(comment, "comment")
    request.decided_at = timezone.now()
    request.save(update_fields=["status", "reviewer", "comment", "decided_at"])
    audit_record(
        actor=reviewer,
        action="promotion.reject",
        obj=request,
        before={"status": Status.PENDING},
        after={"status": Status.REJECTED, "comment": request.comment},
        source_ip=source_ip,
    )
    _notify_on_commit(request.pk, "promotion.rejected")
    return request


@_refusals_audited("promotion.cancel")
@transaction.atomic
def promotion_cancel(
    *, request_id: int, user: AbstractBaseUser, comment: str = "", source_ip: str | None = None
) -> PromotionRequest:
    """The requester withdraws a pending request."""
    request = _lock_request(request_id)
    if request.requester_id != user.pk:
        raise Forbidden(f"only the requester can cancel promotion request #{request.pk}")
    _pending_check(request, "cancelled")
    request.status = Status.CANCELLED
    request.comment = _text(comment, "comment")
    request.decided_at = timezone.now()
    request.save(update_fields=["status", "comment", "decided_at"])
    audit_record(
        actor=user,
        action="promotion.cancel",
        obj=request,
        before={"status": Status.PENDING},
        after={"status": Status.CANCELLED},
        source_ip=source_ip,
    )
    _notify_on_commit(request.pk, "promotion.cancelled")
    return request


@transaction.atomic
def production_rollback(
    *, model: RegisteredModel, user: AbstractBaseUser, comment: str = "", source_ip: str | None = None
) -> PromotionRequest:
    """Put the previous production version back in Production, in one call.

    It is an emergency action for approvers: it is recorded as an approved request of kind
    "rollback" (requester and reviewer are the same person, the one exception to the
    four-eyes rule), with its gates recorded but not blocking.
    """
    role_check(user, APPROVER, to="rolling back production")
    model = RegisteredModel.objects.select_for_update().get(pk=model.pk)
    team_check(user, model.team_id, what=f"model {model.name!r}")
    current = ModelVersion.objects.select_for_update().filter(model=model, stage=Stage.PRODUCTION).first()
    if current is None:
        raise Conflict(f"model {model.name!r} has no production version to roll back")
    history = (
        PromotionRequest.objects.filter(version__model=model, to_stage=Stage.PRODUCTION, status=Status.APPROVED)
        .exclude(version=current)
        .select_related("version")
        .order_by("-decided_at", "-pk")
    )
    # The version the current one replaced, else the newest earlier production version.
    last = (
        PromotionRequest.objects.filter(version=current, to_stage=Stage.PRODUCTION, status=Status.APPROVED)
        .order_by("-decided_at", "-pk")
        .first()
    )
    target = last.replaced_version if last is not None and last.replaced_version_id else None
    if target is None:
        target = next((r.version for r in history if r.version.status == ModelVersion.Status.READY), None)
    if target is None:
        raise Conflict(f"model {model.name!r} has no earlier production version to roll back to")
    target = ModelVersion.objects.select_for_update().get(pk=target.pk)
    target.model = model
    if target.status != ModelVersion.Status.READY:
        raise InvalidTransition(f"{target} is {target.status}: it cannot serve again")
    request = PromotionRequest.objects.create(
        version=target,
        kind=PromotionRequest.Kind.ROLLBACK,
        from_stage=target.stage,
        to_stage=Stage.PRODUCTION,
        requester=user,
        justification=_text(comment, "comment") or f"rollback from v{current.version}",
        gates=gates_evaluate(version=target, to_stage=Stage.PRODUCTION),
        status=Status.APPROVED,
        reviewer=user,
        comment=_text(comment, "comment"),
        decided_at=timezone.now(),
    )
    request.replaced_version = _move(version=target, to_stage=Stage.PRODUCTION, user=user, source_ip=source_ip)
    request.save(update_fields=["replaced_version"])
    audit_record(
        actor=user,
        action="promotion.rollback",
        obj=request,
        before={"production": current.version},
        after={"production": target.version, "comment": request.comment},
        source_ip=source_ip,
    )
    _notify_on_commit(request.pk, "promotion.rollback")
    return request


def _notify_on_commit(request_id: int, event: str) -> None:
    def enqueue() -> None:
        try:
            queue.enqueue("registry.promotion_notify", args=[request_id, event])
        except Exception:
            # A broker outage must not undo a decision that is already committed.
            log.exception("could not enqueue notifications for promotion request %s", request_id)

    transaction.on_commit(enqueue)


@transaction.atomic
def model_watch(
    *, model: RegisteredModel, user: AbstractBaseUser, watch: bool = True, source_ip: str | None = None
) -> bool:
    """Start (or stop) being told of the model's promotion decisions. Returns the new state."""
    team_check(user, model.team_id, what=f"model {model.name!r}")
    watching = model.watchers.filter(pk=user.pk).exists()
    if watching != watch:
        (model.watchers.add if watch else model.watchers.remove)(user)
        audit_record(
            actor=user,
            action="model.watch" if watch else "model.unwatch",
            obj=model,
            before={"watching": watching},
            after={"watching": watch},
            source_ip=source_ip,
        )
    return watch
