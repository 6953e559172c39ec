from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Group
from django.db.backends.postgresql.operations import DatabaseOperations as PostgresOperations
from django.test.utils import override_settings
from rest_framework.test import APIClient

from accounts.roles import ADMIN, APPROVER, ML_ENGINEER, VIEWER
from accounts.services import user_token_create
from workers.celery import app as celery_app


class OneRoundPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """The production hasher's algorithm with one round instead of a million.

    Each user a test creates with a password cost about 0.3 s of CPU (and a sign-in as
    much again). The hash keeps the `pbkdf2_sha256$1$...` format, so a server started by a
    test with the production settings (gunicorn, Celery, uvicorn) still checks it."""

    iterations = 1


@pytest.fixture(autouse=True, scope="session")
def fast_password_hashing() -> Iterator[None]:
    with override_settings(PASSWORD_HASHERS=[f"{__name__}.{OneRoundPBKDF2PasswordHasher.__qualname__}"]):
        yield


@pytest.fixture(autouse=True, scope="session")
def flush_by_delete() -> Iterator[None]:
    """After each transactional test (transactional_db, live_server, real workers) Django
    empties every table with one TRUNCATE, which rewrites the files of some 40 tables and
    their indexes: 1.3 s on the loaded 2-core machine, against 0.02 s for a DELETE of each
    table. Every foreign key Django creates on PostgreSQL is DEFERRABLE INITIALLY DEFERRED,
    so the DELETEs can run in any order inside the flush's transaction."""
    truncate = PostgresOperations.sql_flush

    def sql_flush(
        self: PostgresOperations, style: Any, tables: Any, *, reset_sequences: bool = False, allow_cascade: bool = False
    ) -> list[str]:
        if reset_sequences or not tables:
            return truncate(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        return [f"DELETE FROM {self.quote_name(table)};" for table in tables]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PostgresOperations, "sql_flush", sql_flush)
        yield


@pytest.fixture(autouse=True)
def artifact_store(settings: Any, tmp_path: Path) -> Path:
    """Each test gets its own empty artifact store."""
    store = tmp_path / "artifacts"
    settings.ARTIFACT_STORE = store
    return store


@pytest.fixture(autouse=True)
def celery_eager() -> Iterator[None]:
    """Unit tests run tasks in-process; integration tests use a real worker instead."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


@functools.cache
def iris_bytes() -> bytes:
    from registry.demo import iris_onnx

    return iris_onnx()[0]


def make_user(django_user_model: Any, username: str, role: str) -> Any:
    user = django_user_model.objects.create_user(username=username, password=f"{username}-pass-123")
    group, _ = Group.objects.get_or_create(name=role)
    user.groups.add(group)
    return user


def client_for(user: Any) -> APIClient:
    _, key = user_token_create(user=user, name="tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def engineer(django_user_model: Any) -> Any:
    return make_user(django_user_model, "erin", ML_ENGINEER)


@pytest.fixture
def viewer(django_user_model: Any) -> Any:
    return make_user(django_user_model, "victor", VIEWER)


@pytest.fixture
def approver(django_user_model: Any) -> Any:
    return make_user(django_user_model, "alice", APPROVER)


@pytest.fixture
def admin_user(django_user_model: Any) -> Any:
    return make_user(django_user_model, "ada", ADMIN)


@pytest.fixture
def api(engineer: Any) -> APIClient:
    """An API client signed in as an ML engineer with a bearer token."""
    return client_for(engineer)


def upload(api: APIClient, model: str, data: bytes, *, filename: str = "model.onnx", **fields: Any) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import TestCase

    payload = {"artifact": SimpleUploadedFile(filename, data, content_type="application/octet-stream"), **fields}
    # Tests run inside a transaction that never commits; run the on-commit validation now,
    # then read the version again to see its outcome.
    with TestCase.captureOnCommitCallbacks(execute=True) as callbacks:
        response = api.post(f"/api/v1/models/{model}/versions/", payload, format="multipart")
    if response.status_code == 201 and callbacks:
        # Keep the upload's status code, with the version as it is after validation.
        refreshed = api.get(f"/api/v1/models/{model}/versions/{response.json()['version']}/")
        refreshed.status_code = response.status_code
        return refreshed
    return response
