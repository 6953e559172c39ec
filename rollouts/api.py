"""The rollouts API: start, list, read (with the timeline), pause, resume, abort, promote.
Thin: rollouts.services decides; roles are checked there (approver on production)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import ReadOrEngineerWrites, team_scope
from config.errors import NotFound
from config.http import client_ip
from inference.models import Rollout
from inference.selectors import endpoint_for_user_or_404
from rollouts import services as rollouts

ACTIONS = {
    "pause": rollouts.rollout_pause,
    "resume": rollouts.rollout_resume,
    "abort": rollouts.rollout_abort,
    "promote": rollouts.rollout_promote,
}


class RolloutStartSerializer(serializers.Serializer):
    version = serializers.JSONField(help_text="the candidate's version number (of the model or of the pipeline)")
    model = serializers.CharField(required=False, help_text="default: the model of the current primary")
    pipeline = serializers.CharField(
        required=False,
        help_text="the candidate is this pipeline's version instead of a model version (not with model)",
    )
    plan = serializers.JSONField(
        required=False,
        help_text='{"shadow": {"bake_s": 60} (optional shadow phase), "steps": [{"weight": 5, "bake_s": 300}, ...], '
        '"checks": {...}, "failure_limit": 1, "on_inconclusive": "pause", "confirm_full": false}; '
        "defaults: no shadow phase, 5/25/50/100 %, 5 minutes each",
    )


def rollout_dict(rollout: Rollout, *, events: bool = False) -> dict[str, Any]:
    steps = rollout.plan.get("steps", [])
    out: dict[str, Any] = {
        "id": rollout.pk,
        "endpoint": rollout.endpoint.name,
        "candidate": rollout.candidate_route,  # {"model", "version"} or {"pipeline", "version"}
        "state": rollout.state,
        "step": rollout.step,
        "phase": "shadow" if rollout.step < 0 and rollout.plan.get("shadow") else "traffic",
        "weight": steps[rollout.step]["weight"] if 0 <= rollout.step < len(steps) else 0,
        "step_started_at": rollout.step_started_at,
        "failures": rollout.failures,
        "reason": rollout.reason,
        "plan": rollout.plan,
        "stable_routes": rollout.stable_routes,
        "started_by": rollout.started_by.get_username() if rollout.started_by else None,
        "confirmed_by": rollout.confirmed_by.get_username() if rollout.confirmed_by else None,
        "created_at": rollout.created_at,
        "finished_at": rollout.finished_at,
    }
    if events:
        out["events"] = [
            {
                "step": e.step,
                "kind": e.kind,
                "detail": e.detail,
                "analysis": e.analysis,
                "actor": e.actor_name,
                "at": e.created_at,
            }
            for e in rollout.events.all()
        ]
    return out


def _rollouts(request: Request, name: str) -> Any:
    endpoint = endpoint_for_user_or_404(request.user, name)
    scoped = team_scope(Rollout.objects.filter(endpoint=endpoint), request.user)
    return endpoint, scoped.select_related(
        "endpoint", "candidate__model", "candidate_pipeline__pipeline", "started_by", "confirmed_by"
    )


def _rollout(request: Request, name: str, rollout_id: int) -> Rollout:
    _, rows = _rollouts(request, name)
    rollout = rows.filter(pk=rollout_id).first()
    if rollout is None:
        raise NotFound(f'endpoint "{name}" has no rollout #{rollout_id}')
    return rollout


class RolloutListCreate(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(
        summary="The endpoint's rollouts, newest first", responses=OpenApiTypes.OBJECT, operation_id="rollout_list"
    )
    def get(self, request: Request, name: str) -> Response:
        _, rows = _rollouts(request, name)
        return Response({"results": [rollout_dict(r) for r in rows[:100]]})

    @extend_schema(
        summary="Start a progressive rollout of a model or pipeline version (the first step moves traffic now)",
        request=RolloutStartSerializer,
        responses={201: OpenApiTypes.OBJECT},
        operation_id="rollout_start",
    )
    def post(self, request: Request, name: str) -> Response:
        data = RolloutStartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        rollout = rollouts.rollout_start(
            endpoint=endpoint_for_user_or_404(request.user, name),
            version=data.validated_data["version"],
            model=data.validated_data.get("model"),
            pipeline=data.validated_data.get("pipeline"),
            plan=data.validated_data.get("plan"),
            user=request.user,
            source_ip=client_ip(request),
        )
        return Response(rollout_dict(rollout, events=True), status=status.HTTP_201_CREATED)


class RolloutDetail(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(
        summary="One rollout with its timeline (steps, analyses and their values)",
        responses=OpenApiTypes.OBJECT,
        operation_id="rollout_get",
    )
    def get(self, request: Request, name: str, rollout_id: int) -> Response:
        return Response(rollout_dict(_rollout(request, name, rollout_id), events=True))


class RolloutAction(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(
        summary="pause, resume, abort (stable routes back) or promote (an approver: 100 % now)",
        request=None,
        responses=OpenApiTypes.OBJECT,
        operation_id="rollout_act",
    )
    def post(self, request: Request, name: str, rollout_id: int, action: str) -> Response:
        act = ACTIONS.get(action)
        if act is None:
            raise NotFound(f"no rollout action {action!r}; expected one of {', '.join(ACTIONS)}")
        rollout = act(rollout=_rollout(request, name, rollout_id), user=request.user, source_ip=client_ip(request))
        rollout.refresh_from_db()
        return Response(rollout_dict(rollout, events=True))
