"""What the apps above registry do when a version changes stage: callbacks they register.

registry sits below inference (inference imports registry's models), so a promotion
cannot call the serving side directly. inference's AppConfig.ready() registers its
callbacks here instead (inference/stage_hooks.py): a stage change moves the endpoints
that follow the model, and archiving is refused while an endpoint serves the version.
Plain lists, no signals: the callbacks run in the caller's transaction, in order, and
their exceptions reach the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from registry.models import ModelVersion


@dataclass(frozen=True)
class StageChange:
    """`version` reached `stage` (rows locked, in the caller's transaction); `previous` is
    the production version it moved aside, if any."""

    version: ModelVersion
    stage: str
    previous: ModelVersion | None
    user: AbstractBaseUser


StageChangeCallback = Callable[[StageChange], None]
ServingRefusal = Callable[["ModelVersion"], None]

_stage_change: list[StageChangeCallback] = []
_serving_refusals: list[ServingRefusal] = []


def on_stage_change(callback: StageChangeCallback) -> StageChangeCallback:
    """Register `callback` to run after every promotion's stage change (once, however often called)."""
    if callback not in _stage_change:
        _stage_change.append(callback)
    return callback


def serving_refusal(callback: ServingRefusal) -> ServingRefusal:
    """Register `callback(version)`, which raises (registry.errors.VersionServing) to refuse archiving."""
    if callback not in _serving_refusals:
        _serving_refusals.append(callback)
    return callback


def stage_changed(change: StageChange) -> None:
    for callback in _stage_change:
        callback(change)


def serving_refuse(*, version: ModelVersion) -> None:
    """Archiving is refused while a production or staging endpoint routes to the version.

    Archiving is never urgent, so the people who own the traffic move it themselves
    (docs/governance.md: "Archive and rollback while serving"); a rollback, which is
    urgent, moves the endpoints instead (the stage-change callback).
    """
    for refuse in _serving_refusals:
        refuse(version)
