"""Pipelines: create, add a version (checked), resolve model references, and the rules
for attaching one to an endpoint (environment, team). Every change is audited."""

from __future__ import annotations

import logging
import re
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Team
from accounts.permissions import can_access_team, default_team, get_visible_or_404
from audit.services import audit_record
from config.errors import Conflict, DomainError, Forbidden, NotFound
from inference.pipelines import features
from inference.pipelines.graph import CompiledPipeline, FeatureLookup, GraphError, ModelRef, pipeline_compile
from inference.pipelines.models import FeatureSet, Pipeline, PipelineVersion
from inference.runtime.signature import Signature
from registry import storage
from registry.models import ModelVersion

log = logging.getLogger(__name__)
# The registry's rule for names (registry.services.NAME_RE), kept here so that this module
# does not join the services <-> tasks import cycle.
NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$")
_STAGES = {s.lower(): s for s in ModelVersion.Stage.values}


def resolver(team_id: int | None) -> Any:
    """(step, {"model", "version"}) -> ModelRef: "name" + version, "name:N" or "name@stage".

    A pipeline uses only ready versions of models of its own team or of no team (another
    team's model is not found, worded like a missing one)."""

    def resolve(step: str, ref: dict[str, Any]) -> ModelRef:
        text, version = ref["model"], ref.get("version")
        name, stage = text, None
        if "@" in text:
            name, _, alias = text.partition("@")
            stage = _STAGES.get(alias.lower())
            if stage is None:
                raise GraphError(f'step "{step}": unknown stage alias "@{alias}" (use @production, @staging)')
        elif ":" in text and version is None:
            name, _, number = text.partition(":")
            if not number.isdigit():
                raise GraphError(f'step "{step}": "{text}" is not "name:version"')
            version = int(number)
        rows = ModelVersion.objects.select_related("model").filter(model__name=name)
        if team_id is not None:
            from django.db.models import Q

            rows = rows.filter(Q(model__team_id=team_id) | Q(model__team__isnull=True))
        else:
            rows = rows.filter(model__team__isnull=True)
        if stage is not None:
            found = rows.filter(stage=stage).order_by("-version").first()
            missing = f'no {stage} version of a model named "{name}"'
        elif version is not None:
            found = rows.filter(version=version).first()
            missing = f'no version {version} of a model named "{name}"'
        else:
            raise GraphError(
                f'step "{step}": name a version ("version": N, "{name}:N") or a stage ("{name}@production")'
            )
        if found is None:
            raise GraphError(f'step "{step}": {missing}', details={"step": step, "model": text})
        if found.status != ModelVersion.Status.READY:
            raise GraphError(f'step "{step}": {found} is {found.status}, not ready')
        return ModelRef(
            ref=text if stage else f"{name}:{found.version}",
            model=name,
            version=found.version,
            stage=found.stage,
            signature=Signature.from_dict(found.signature or {}),
            artifact_sha256=found.artifact_sha256,
            artifact_path=str(storage.artifact_path(found.artifact_sha256)),
            version_id=found.pk,
        )

    return resolve


def router_check(config: dict[str, Any]) -> None:
    """A router step's settings, checked by the bandit library (inference.bandits)."""
    try:
        from inference.bandits import validate_config  # optional: the bandit library may be absent
    except ImportError:
        raise GraphError("router steps need the bandit library (inference.bandits), which is not installed") from None
    validate_config(config)


MAX_NESTING = 3


def pipeline_resolver(team_id: int | None, depth: int) -> Any:
    """(router step, {"pipeline": name, "version": N}) -> the compiled pipeline (an arm)."""

    def resolve(step: str, arm: dict[str, Any]) -> CompiledPipeline:
        if depth >= MAX_NESTING:
            raise GraphError(f'step "{step}": pipelines nest at most {MAX_NESTING} deep (is one its own arm?)')
        try:
            version = pipeline_version_get(
                name=arm.get("pipeline"), version=arm.get("version"), team_id=team_id, where=f'step "{step}" arm'
            )
        except (DomainError, NotFound) as exc:
            raise GraphError(f'step "{step}": {exc.message}') from None
        return compile_version(version, depth=depth + 1)

    return resolve


def compile_version(version: PipelineVersion, *, depth: int = 0) -> CompiledPipeline:
    """The graph a route serves; a lookup of a set its team may not read reads nothing."""
    team_id = version.pipeline.team_id
    graph = pipeline_compile(
        version.spec,
        name=version.pipeline.name,
        version=version.version,
        pipeline_id=version.pipeline_id,
        resolve=resolver(team_id),
        router_check=router_check,
        resolve_pipeline=pipeline_resolver(team_id, depth),
    )
    owners = _feature_set_owners(graph)
    for step in _lookups(graph):
        step.readable = _may_read(owners.get(step.feature_set), team_id) and _feast_allowed(step)
    return graph


def spec_check(spec: Any, *, team: Team | None, name: str = "") -> CompiledPipeline:
    """What the editor and the API run before saving (400 naming the problem)."""
    team_id = team.pk if team else None
    graph = pipeline_compile(
        spec,
        name=name,
        resolve=resolver(team_id),
        router_check=router_check,
        resolve_pipeline=pipeline_resolver(team_id, 0),
    )
    owners = _feature_set_owners(graph)
    for step in _lookups(graph):
        _refuse_foreign(step, owners.get(step.feature_set), team_id)
        if not _feast_allowed(step):
            allowed = ", ".join(_feast_servers()) or "none (MODELHUB_FEAST_SERVERS is empty)"
            raise GraphError(
                f'step "{step.name}".source.url: {step.feast.url if step.feast else ""!r} is not a Feast server '
                f"this platform may call; allowed: {allowed}",
                details={"step": step.name, "field": "source.url"},
            )
    return graph


# --- feature sets: a set belongs to a team; a pipeline reads its own team's sets and shared ones ---


def _lookups(graph: CompiledPipeline) -> list[FeatureLookup]:
    return [s for s in graph.steps.values() if isinstance(s, FeatureLookup)]


def _feature_set_owners(graph: CompiledPipeline) -> dict[str, int | None]:
    names = {s.feature_set for s in _lookups(graph)}
    if not names:
        return {}
    return dict(FeatureSet.objects.filter(name__in=names).values_list("name", "team_id"))


def _feast_servers() -> list[str]:
    return [url.rstrip("/") for url in settings.FEAST_SERVERS]


def _feast_allowed(step: FeatureLookup) -> bool:
    """A Feast source calls only a server the operator listed (MODELHUB_FEAST_SERVERS):
    a pipeline's author must not make the platform POST to any address it can reach."""
    return step.feast is None or step.feast.url in _feast_servers()


def _may_read(owner: int | None, team_id: int | None) -> bool:
    """A set of no team (or not created yet) is shared; a team's set is its team's alone."""
    return owner is None or owner == team_id


def _refuse_foreign(step: FeatureLookup, owner: int | None, team_id: int | None) -> None:
    if not _may_read(owner, team_id):
        raise GraphError(
            f'step "{step.name}": feature set "{step.feature_set}" belongs to another team; '
            "a pipeline reads only its own team's feature sets and shared ones",
            details={"step": step.name, "feature_set": step.feature_set},
        )


def feature_set_claim(name: str, *, team: Team | None, user: AbstractBaseUser | None) -> FeatureSet:
    """The set called `name`, created for `team` if new (no team when the store already
    holds its data from before sets had owners: it stays shared)."""
    found = FeatureSet.objects.filter(name=name).first()
    if found is not None:
        return found
    owner = None if features.has_data(name) else team
    found, _ = FeatureSet.objects.get_or_create(name=name, defaults={"team": owner, "created_by": user})
    return found


def feature_set_load(
    *,
    name: str,
    key: str,
    rows: Any,
    user: AbstractBaseUser | None,
    team: Team | None = None,
    source_ip: str | None = None,
) -> dict[str, Any]:
    """Load rows into a set the caller may see (404 otherwise), creating it for `team`
    (else the caller's only team) on first load. `user` None is an operator (manage.py)."""
    features.name_check(name)
    feature_set = feature_set_claim(name, team=team if team is not None else default_team(user), user=user)
    if user is not None:
        get_visible_or_404(FeatureSet.objects.filter(pk=feature_set.pk), user, name=name)
    if team is not None and feature_set.team_id != team.pk:
        owner = feature_set.team.name if feature_set.team else None
        raise DomainError(f"feature set {name!r} belongs to team {owner!r}, not {team.name!r}")
    result = features.features_load(feature_set=name, key=key, rows=rows)
    feature_set.rows_loaded, feature_set.loaded_at = result["entities"], timezone.now()
    feature_set.save(update_fields=["rows_loaded", "loaded_at"])
    audit_record(
        actor=user,
        action="feature_set.load",
        obj=feature_set,
        after={"entities": result["entities"], "features": result["features"], "store": result["store"]},
        source_ip=source_ip,
    )
    return {**result, "team": feature_set.team.name if feature_set.team else None}


def _snapshot(version: PipelineVersion, graph: CompiledPipeline) -> dict[str, Any]:
    return {
        "pipeline": version.pipeline.name,
        "version": version.version,
        "models": [r.ref + (f" (v{r.version})" if "@" in r.ref else "") for r in graph.models()],
        "steps": list(graph.steps),
    }


def pipeline_create(
    *,
    name: str,
    spec: Any,
    user: AbstractBaseUser,
    team: Team | None = None,
    description: str = "",
    comment: str = "",
    source_ip: str | None = None,
) -> PipelineVersion:
    """A new pipeline and its version 1. Team: the one asked for, else the creator's only one."""
    if not NAME_RE.match(name or ""):
        raise DomainError(
            f"name {name!r} is not allowed: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting and ending with a letter or digit"
        )
    if team is None:
        team = default_team(user)
    if team is not None and not can_access_team(user, team.pk):
        raise Forbidden(f"you are not a member of team {team.name!r}")
    graph = spec_check(spec, team=team, name=name)
    try:
        with transaction.atomic():
            pipeline = Pipeline.objects.create(name=name, team=team, owner=user, description=description)
            version = _version_add(pipeline, spec, graph, user, comment, source_ip, action="pipeline.create")
    except IntegrityError:
        raise Conflict(f"a pipeline named {name!r} already exists") from None
    return version


def pipeline_version_create(
    *, pipeline: Pipeline, spec: Any, user: AbstractBaseUser, comment: str = "", source_ip: str | None = None
) -> PipelineVersion:
    graph = spec_check(spec, team=pipeline.team, name=pipeline.name)
    with transaction.atomic():
        pipeline = Pipeline.objects.select_for_update().get(pk=pipeline.pk)
        return _version_add(pipeline, spec, graph, user, comment, source_ip, action="pipeline.version")


def _version_add(
    pipeline: Pipeline,
    spec: Any,
    graph: CompiledPipeline,
    user: AbstractBaseUser,
    comment: str,
    source_ip: str | None,
    *,
    action: str,
) -> PipelineVersion:
    number = (pipeline.versions.order_by("-version").values_list("version", flat=True).first() or 0) + 1
    version = PipelineVersion.objects.create(
        pipeline=pipeline,
        version=number,
        spec=spec,
        signature=graph.signature_dict(),
        resolved_models=[{"ref": r.ref, "model": r.model, "version": r.version} for r in graph.models()],
        comment=comment[:2000],
        created_by=user,
    )
    graph.version = number
    for step in _lookups(graph):  # a set named before any load is its pipeline's team's
        claimed = feature_set_claim(step.feature_set, team=pipeline.team, user=user)
        _refuse_foreign(step, claimed.team_id, pipeline.team_id)
    audit_record(actor=user, action=action, obj=version, after=_snapshot(version, graph), source_ip=source_ip)
    return version


# --- attaching to an endpoint (called by inference.traffic for routes {"pipeline": ...}) ---

PIPELINE_REF = re.compile(r"[A-Za-z0-9_-]{1,64}")


def pipeline_version_get(*, name: Any, version: Any, team_id: int | None, where: str) -> PipelineVersion:
    """The version a route names; another team's pipeline is not found."""
    if not isinstance(name, str) or not PIPELINE_REF.fullmatch(name):
        raise DomainError(f"{where}.pipeline: expected a pipeline name")
    if isinstance(version, bool) or not isinstance(version, int):
        raise DomainError(f"{where}.version: expected the pipeline's version number")
    found = PipelineVersion.objects.select_related("pipeline").filter(pipeline__name=name, version=version).first()
    if found is None or (found.pipeline.team_id is not None and found.pipeline.team_id != team_id):
        raise NotFound(f"no version {version} of a pipeline named {name!r}")
    return found


def stages_of(version: PipelineVersion) -> list[tuple[str, int, str]]:
    """(model, version, stage) of every model step and arm, resolved now."""
    graph = compile_version(version)
    return [(r.model, r.version, r.stage) for r in graph.models()]
