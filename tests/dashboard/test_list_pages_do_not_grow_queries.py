"""A list page costs the same number of queries for 3 rows as for 40 (no N+1)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from registry.models import RegisteredModel
from tests.dashboard.conftest import seed_models

pytestmark = pytest.mark.django_db


def queries(client, path: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured)


def test_the_model_list_query_count_does_not_grow_with_models(browser_client, engineer):
    seed_models(3, 2, user=engineer)
    few = queries(browser_client, "/models/")
    RegisteredModel.objects.all().delete()
    seed_models(24, 3, user=engineer)
    assert queries(browser_client, "/models/") == few


def test_the_model_page_query_count_does_not_grow_with_versions(browser_client, engineer):
    seed_models(1, 3, user=engineer)
    few = queries(browser_client, "/models/model-000/")
    RegisteredModel.objects.all().delete()
    seed_models(1, 45, user=engineer)
    assert queries(browser_client, "/models/model-000/") == few


def test_the_home_page_query_count_does_not_grow_with_versions(browser_client, engineer):
    seed_models(2, 2, user=engineer)
    few = queries(browser_client, "/")
    RegisteredModel.objects.all().delete()
    seed_models(8, 5, user=engineer)
    assert queries(browser_client, "/") == few
