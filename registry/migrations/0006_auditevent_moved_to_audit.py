# AuditEvent now belongs to the audit app (audit/migrations/0001 took over its table):
# only Django's state changes, and the content type follows so that permissions and
# admin log entries keep pointing at it.

from django.db import migrations


def _content_type_move(apps, schema_editor, source, target):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if ContentType.objects.filter(app_label=target, model="auditevent").exists():
        return
    ContentType.objects.filter(app_label=source, model="auditevent").update(app_label=target)


def forwards(apps, schema_editor):
    _content_type_move(apps, schema_editor, "registry", "audit")


def backwards(apps, schema_editor):
    _content_type_move(apps, schema_editor, "audit", "registry")


class Migration(migrations.Migration):

    dependencies = [
        ('registry', '0005_promotion_evidence'),
        ('audit', '0001_initial'),
        ('contenttypes', '0002_remove_content_type_name'),
        # These data migrations write audit events through registry's historical model:
        # they run while it is still in registry's state.
        ('inference', '0003_endpoint_environment'),
        ('inference', '0003_endpoint_team_from_primary_model'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.DeleteModel(
                    name='AuditEvent',
                ),
            ],
        ),
        migrations.RunPython(forwards, backwards),
    ]
