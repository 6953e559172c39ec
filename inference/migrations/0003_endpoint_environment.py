"""Endpoints get an environment (issue #12).

Existing endpoints become `production` when every route that takes traffic (primary,
canary) serves a Production version and every shadow a Staging or Production one, so
that they already obey the production rule; any other endpoint (no split, or serving
a version that was never promoted) becomes `development`, which serves any validated
version: nothing that answered before the migration stops answering. Each decision is
an audit event by the system, with the reason.
"""

from django.db import migrations, models


def _environment_of(routes, stages):
    taking = [r for r in routes if r.get("role") != "shadow"]
    if not taking:
        return "development", "no traffic split"
    for route in routes:
        stage = stages.get((route.get("model"), route.get("version")), "unknown")
        allowed = ("Staging", "Production") if route.get("role") == "shadow" else ("Production",)
        if stage not in allowed:
            return "development", f"{route.get('model')} v{route.get('version')} ({route.get('role')}) is in {stage}"
    return "production", "every route serves a Production version"


def environments_set(apps, schema_editor):
    Endpoint = apps.get_model("inference", "Endpoint")
    Revision = apps.get_model("inference", "TrafficPolicyRevision")
    ModelVersion = apps.get_model("registry", "ModelVersion")
    AuditEvent = apps.get_model("registry", "AuditEvent")
    for endpoint in Endpoint.objects.order_by("pk"):
        current = Revision.objects.filter(endpoint=endpoint, is_current=True).first()
        routes = current.routes if current is not None else []
        stages = {
            (name, number): stage
            for name, number, stage in ModelVersion.objects.filter(
                model__name__in={r.get("model") for r in routes}
            ).values_list("model__name", "version", "stage")
        }
        environment, reason = _environment_of(routes, stages)
        Endpoint.objects.filter(pk=endpoint.pk).update(environment=environment)
        AuditEvent.objects.create(
            actor=None,
            actor_name="system",
            action="endpoint.environment",
            object_type="inference.endpoint",
            object_id=str(endpoint.pk),
            object_repr=endpoint.name[:255],
            before={"environment": None},
            after={"environment": environment, "reason": f"migration 0003: {reason}"},
            team_id=endpoint.team_id,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0002_endpoint_require_key_deployment_provider"),
        ("registry", "0002_promotion_requests_webhooks_watchers"),
    ]

    operations = [
        migrations.AddField(
            model_name="endpoint",
            name="environment",
            field=models.CharField(
                choices=[("production", "Production"), ("staging", "Staging"), ("development", "Development")],
                default="development",
                max_length=16,
            ),
        ),
        migrations.RunPython(environments_set, migrations.RunPython.noop),
    ]
