"""After PostgreSQL restarts, the prediction path's cache loads and readiness reconnect by themselves.

A restart kills every server backend; each connection a process kept (CONN_MAX_AGE) is
then dead, and the raw WSGI/ASGI fronts skip Django's request signals that would drop it.
Here the server side of this thread's connection is terminated (pg_terminate_backend,
what a restart does to it) and the next cache miss must still answer.
"""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest
from django.db import connection

from config.health import readiness
from inference.routing_cache import edge_cache
from tests.inference.conftest import iris_served_with_key

pytestmark = [pytest.mark.django_db(transaction=True)]


def _kill_this_threads_backend() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    connection.ensure_connection()
    pid = connection.connection.get_backend_pid()
    db = connection.settings_dict
    other = psycopg2.connect(
        dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"], host=db["HOST"] or "127.0.0.1", port=db["PORT"]
    )
    try:
        other.autocommit = True
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()


def test_a_cache_miss_on_a_connection_the_database_killed_reconnects_and_answers(engineer: Any) -> None:
    key = iris_served_with_key(engineer, "app")
    edge_cache.clear()
    _kill_this_threads_backend()

    table = edge_cache.table("iris")  # a new endpoint for this process: read from the database

    assert table is not None and table.endpoint == "iris"
    _kill_this_threads_backend()
    entry = edge_cache.api_key(key)  # a key this process has not seen
    assert entry is not None and "iris" in entry.endpoints


def test_readiness_replaces_a_dead_connection_instead_of_saying_not_ready(engineer: Any) -> None:
    _kill_this_threads_backend()

    ok, checks = readiness()

    assert checks["database"]["ok"] is True, checks["database"]
