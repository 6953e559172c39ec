"""Endpoints created before endpoints were team-scoped have no team, so every signed-in
user could see them, change their split and make keys for them. Each such endpoint now
gets the team of the model its current primary route serves (or, with no split, of the
model it follows); one audit event per endpoint records the change, with what an admin
should review: routes to other teams' models and keys made by people outside the team
(left working: revoking them here could stop an application). Endpoints whose models
belong to no team stay without one (visible to everyone, as before)."""

from django.db import migrations


def endpoints_take_their_models_team(apps, schema_editor):
    Endpoint = apps.get_model("inference", "Endpoint")
    Deployment = apps.get_model("inference", "Deployment")
    TrafficPolicyRevision = apps.get_model("inference", "TrafficPolicyRevision")
    ApiKey = apps.get_model("inference", "ApiKey")
    AuditEvent = apps.get_model("registry", "AuditEvent")
    for endpoint in Endpoint.objects.filter(team__isnull=True).select_related("follows_model__team"):
        team = None
        current = TrafficPolicyRevision.objects.filter(endpoint=endpoint, is_current=True).first()
        primary = next((r for r in (current.routes if current else []) if r.get("role") == "primary"), None)
        if primary is not None:
            deployment = (
                Deployment.objects.filter(pk=primary.get("deployment"))
                .select_related("model_version__model__team")
                .first()
            )
            team = deployment.model_version.model.team if deployment is not None else None
        elif endpoint.follows_model is not None:
            team = endpoint.follows_model.team
        if team is None:
            continue
        endpoint.team = team
        endpoint.save(update_fields=["team"])
        # For an admin to review (nothing is revoked or re-routed here: that could stop an
        # application in production): routes to other teams' models, and keys made by
        # people outside the team, which keep working until revoked.
        foreign = [
            f"{r.get('model')}:{r.get('version')}"
            for r in (current.routes if current else [])
            if Deployment.objects.filter(pk=r.get("deployment"))
            .exclude(model_version__model__team=None)
            .exclude(model_version__model__team=team)
            .exists()
        ]
        outsiders = [
            key.prefix
            for key in ApiKey.objects.filter(endpoints=endpoint, revoked_at=None).select_related("created_by")
            if key.created_by is None
            or not (
                key.created_by.is_superuser
                or key.created_by.groups.filter(name="admin").exists()
                or team.members.filter(pk=key.created_by_id).exists()
            )
        ]
        AuditEvent.objects.create(
            actor=None,
            actor_name="system",
            action="endpoint.team.migrate",
            object_type="inference.endpoint",
            object_id=str(endpoint.pk),
            object_repr=endpoint.name[:255],
            before={"team": None},
            after={
                "team": team.name,
                "why": "the team of the model its primary route serves",
                "routes_to_other_teams": foreign,
                "keys_made_outside_the_team": outsiders,
            },
            team=team,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0002_endpoint_require_key_deployment_provider"),
        ("registry", "0002_promotion_requests_webhooks_watchers"),
        ("accounts", "0002_roles"),
    ]

    operations = [
        # Going back leaves the teams in place: a team-less endpoint was the bug, not a state to restore.
        migrations.RunPython(endpoints_take_their_models_team, migrations.RunPython.noop),
    ]
