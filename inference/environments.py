"""Environments: what an endpoint of each environment (production, staging, development) may
serve, decided in one place (`environment_rule_check`)."""

from __future__ import annotations

from typing import Any

from config.errors import Conflict
from inference.models import Deployment, Endpoint
from registry.models import ModelVersion


class EnvironmentRuleBroken(Conflict):
    code = "environment_rule"


Environment = Endpoint.Environment
Stage = ModelVersion.Stage
ENVIRONMENT_RULES: dict[str, str] = {
    Environment.PRODUCTION: (
        "a production endpoint's primary and canary routes take only Production versions; a Staging "
        "version may join only as a shadow, or as the canary of a rollout an approver started"
    ),
    Environment.STAGING: "a staging endpoint takes only Staging or Production versions",
    Environment.DEVELOPMENT: "a development endpoint takes any validated version",
}


def version_allowed(*, environment: str, stage: str, role: str, rollout_canary: bool = False) -> bool:
    """May a version in `stage` take `role` on an endpoint of `environment`?"""
    if environment == Environment.PRODUCTION:
        if role == Deployment.Role.SHADOW or (rollout_canary and role == Deployment.Role.CANARY):
            return stage in (Stage.STAGING, Stage.PRODUCTION)
        return stage == Stage.PRODUCTION
    if environment == Environment.STAGING:
        return stage in (Stage.STAGING, Stage.PRODUCTION)
    return True


def environment_rule_check(
    *,
    environment: str,
    endpoint_name: str,
    routes: list[dict[str, Any]],
    stages: dict[tuple[str, int], str],
    rollout_candidate: tuple[str, str, int] | None = None,
) -> None:
    """Raise EnvironmentRuleBroken (409) naming the first route the environment forbids.

    `stages` maps (model, version) to its stage; `rollout_candidate` is what an
    approver-started rollout is moving in, as ("model", name, version) or ("pipeline",
    name, version): it may be a Staging canary on production (a pipeline candidate's
    models are checked by traffic.pipeline_environment_check, with the same exception).
    """
    for route in routes:
        if route.get("pipeline"):
            continue  # a pipeline's model steps are checked by traffic._pipeline_routes_check
        key = (route["model"], route["version"])
        stage = stages[key]
        if version_allowed(
            environment=environment,
            stage=stage,
            role=route["role"],
            rollout_canary=("model", *key) == rollout_candidate,
        ):
            continue
        raise EnvironmentRuleBroken(
            f"{route['model']} v{route['version']} is in {stage}, so it cannot be the {route['role']} of "
            f'{environment} endpoint "{endpoint_name}": {ENVIRONMENT_RULES[environment]}',
            details={
                "model": route["model"],
                "version": route["version"],
                "stage": stage,
                "role": route["role"],
                "environment": environment,
                "rule": ENVIRONMENT_RULES[environment],
            },
        )
