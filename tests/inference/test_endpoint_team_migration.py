"""A database made at commit c3bd1b7 (endpoints had no team) migrates forward: each
endpoint gets the team of the model its primary route serves, with an audit event."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

# The leaf migration of each app at c3bd1b7.
AT_C3BD1B7 = [
    ("accounts", "0002_roles"),
    ("inference", "0002_endpoint_require_key_deployment_provider"),
    ("monitoring", "0002_input_samples_per_flush"),
    ("registry", "0002_promotion_requests_webhooks_watchers"),
]


def test_endpoints_without_a_team_get_their_primary_models_team():
    executor = MigrationExecutor(connection)
    executor.migrate(AT_C3BD1B7)
    old = executor.loader.project_state(AT_C3BD1B7).apps
    Team = old.get_model("accounts", "Team")
    RegisteredModel = old.get_model("registry", "RegisteredModel")
    ModelVersion = old.get_model("registry", "ModelVersion")
    Endpoint = old.get_model("inference", "Endpoint")
    Deployment = old.get_model("inference", "Deployment")
    Revision = old.get_model("inference", "TrafficPolicyRevision")

    alpha = Team.objects.create(name="alpha")
    served = {}
    beta_team = Team.objects.create(name="beta-models")
    for name, team in (("alpha-model", alpha), ("open-model", None), ("canary-model", None), ("beta-model", beta_team)):
        model = RegisteredModel.objects.create(name=name, team=team)
        served[name] = ModelVersion.objects.create(
            model=model, version=1, artifact_sha256=name.ljust(64, "0"), artifact_size=1
        )

    def endpoint_serving(name: str, routes: list[tuple[str, str, int]]) -> None:
        endpoint = Endpoint.objects.create(name=name)
        snapshot = []
        for model, role, weight in routes:
            deployment = Deployment.objects.create(
                endpoint=endpoint, model_version=served[model], role=role, weight=weight
            )
            snapshot.append({"deployment": deployment.pk, "model": model, "version": 1, "role": role, "weight": weight})
        Revision.objects.create(endpoint=endpoint, revision=1, routes=snapshot, is_current=True)

    # The primary decides, whatever the canary serves.
    endpoint_serving("alpha-ep", [("canary-model", "canary", 10), ("alpha-model", "primary", 90)])
    # beta's engineer routed alpha's model and made a key (the attack in issue 10).
    beta = Team.objects.create(name="beta")
    User = old.get_model("auth", "User")
    bo = User.objects.create(username="bo")
    beta.members.add(bo)
    endpoint_serving("stolen-ep", [("alpha-model", "primary", 90), ("beta-model", "canary", 10)])
    ApiKey = old.get_model("inference", "ApiKey")
    key = ApiKey.objects.create(name="bo-app", prefix="app_bo1", hashed="x" * 64, created_by=bo)
    key.endpoints.add(Endpoint.objects.get(name="stolen-ep"))
    endpoint_serving("open-ep", [("open-model", "primary", 100)])
    Endpoint.objects.create(name="empty-ep")

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from audit.models import AuditEvent
    from inference.models import Endpoint as EndpointNow

    teams = dict(EndpointNow.objects.values_list("name", "team__name"))
    assert teams == {"alpha-ep": "alpha", "open-ep": None, "empty-ep": None, "stolen-ep": "alpha"}
    event = AuditEvent.objects.get(action="endpoint.team.migrate", object_repr="alpha-ep")
    assert (event.before, event.team.name) == ({"team": None}, "alpha")
    assert (event.after["routes_to_other_teams"], event.after["keys_made_outside_the_team"]) == ([], [])
    # Now a 404 to beta; what an admin should review is in the event.
    stolen = AuditEvent.objects.get(action="endpoint.team.migrate", object_repr="stolen-ep").after
    assert stolen["routes_to_other_teams"] == ["beta-model:1"]
    assert stolen["keys_made_outside_the_team"] == ["app_bo1"]
