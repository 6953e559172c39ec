from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from registry.models import ModelVersion

pytestmark = pytest.mark.django_db


def test_bootstrap_creates_an_admin_and_a_ready_demo_model_and_can_run_again(django_capture_on_commit_callbacks):
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("modelhub_bootstrap", stdout=out)
    assert "admin account created: admin / " in out.getvalue()
    assert get_user_model().objects.get(username="admin").is_superuser
    version = ModelVersion.objects.get(model__name="iris-classifier")
    assert version.status == "ready", version.validation_report
    assert version.metadata["metrics"]["accuracy"] > 0.8

    again = io.StringIO()
    call_command("modelhub_bootstrap", stdout=again)
    assert "exists" in again.getvalue()
    assert ModelVersion.objects.count() == 1
