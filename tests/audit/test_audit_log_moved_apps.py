"""The audit log moved from registry to its own app without moving data: events written
before the move are read after it, from the same table, and its content type followed."""

from __future__ import annotations

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from audit.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_THE_MOVE = [("audit", None), ("registry", "0005_promotion_evidence")]


def test_events_written_in_registrys_model_are_read_through_the_audit_app() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE_THE_MOVE)
    old = MigrationExecutor(connection)._create_project_state(with_applied_migrations=True).apps
    old.get_model("registry", "AuditEvent").objects.create(
        actor_name="ana", action="model.register", object_type="registry.registeredmodel", object_id="7"
    )
    OldContentType = old.get_model("contenttypes", "ContentType")
    registry_type = OldContentType.objects.get_or_create(app_label="registry", model="auditevent")[0].pk

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    event = AuditEvent.objects.get(action="model.register")
    assert (event.actor_name, event.object_id) == ("ana", "7")
    assert AuditEvent._meta.db_table == "registry_auditevent"
    ContentType.objects.clear_cache()
    assert ContentType.objects.get(app_label="audit", model="auditevent").pk == registry_type
