"""Endpoints created before endpoints were team-scoped have no team, so every signed-in
user could see them, change their split and make keys for them. Each such endpoint now
gets the team of the model its current primary route serves (or, with no split, of the
model it follows); one audit event per endpoint records the change. Endpoints whose
models belong to no team stay without one (visible to everyone, as before)."""

from django.db import migrations


def endpoints_take_their_models_team(apps, schema_editor):
    Endpoint = apps.get_model("inference", "Endpoint")
    Deployment = apps.get_model("inference", "Deployment")
    TrafficPolicyRevision = apps.get_model("inference", "TrafficPolicyRevision")
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
        AuditEvent.objects.create(
            actor=None,
            actor_name="system",
            action="endpoint.team.migrate",
            object_type="inference.endpoint",
            object_id=str(endpoint.pk),
            object_repr=endpoint.name[:255],
            before={"team": None},
            after={"team": team.name, "why": "the team of the model its primary route serves"},
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
