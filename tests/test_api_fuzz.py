"""Schemathesis fuzzes every /api/ operation of the OpenAPI schema (fixed seed, at most
25 examples each): no 5xx, every answer's status is documented and its body matches
the schema. Requests go through Django's WSGI handler, signed in as an admin (who
reaches the most code), against a database holding a model, a version and an endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, seed, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.roles import ADMIN
from accounts.services import user_token_create
from inference import endpoints, traffic
from tests.inference.test_team_scoping_endpoints import ready_version
from tests.registry import governance as g

# 25 examples per operation took 115 s on the shared 2-core machine (about 1,130
# requests, 45 % of it in the requests); 12 keep the test near a minute.
MAX_EXAMPLES = 12
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]


@pytest.fixture
def keep_test_connection() -> Iterator[None]:
    """Django's handler closes the database connection after each request; the test's
    transaction lives on it (Django's own test client unhooks the same signal)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(db: Any, keep_test_connection: None) -> Any:
    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", WSGIHandler())


# The prediction paths answer in the Open Inference Protocol's shapes and are the edge's
# (tests/inference covers them); the token path is throttled (429) by design.
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path_regex=r"^/v2|/predict$|^/api/v1/auth/token/$")


@pytest.fixture
def admin_token(django_user_model: Any) -> str:
    from django.contrib.auth.models import Group

    admin = django_user_model.objects.create_user(username="fuzz-admin")
    admin.groups.add(Group.objects.get_or_create(name=ADMIN)[0])
    team = g.team("fuzz", admin)
    ready_version("iris", team, 0)
    endpoint = endpoints.endpoint_create(name="iris", user=admin)
    traffic.traffic_policy_revise(
        endpoint=endpoint, routes=[{"model": "iris", "version": 1, "role": "primary", "weight": 100}], user=admin
    )
    return user_token_create(user=admin, name="fuzz")[1]


@schema.parametrize()
@seed(20261129)
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_as_its_schema_says(case: Any, admin_token: str) -> None:
    # Each example starts from the seeded data: its writes (and a failed statement, which
    # would abort the test's transaction) are rolled back, as separate requests would be.
    savepoint = transaction.savepoint()
    try:
        case.call_and_validate(headers={"Authorization": f"Bearer {admin_token}"}, checks=CHECKS)
    finally:
        transaction.savepoint_rollback(savepoint)
