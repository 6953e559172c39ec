"""The REST API stays compatible: nothing in the committed schema (docs/openapi.json)
disappears unless docs/api.md's "Changes" section names it. Additions pass.

Regenerate the snapshot after a change (and list any removal under "Changes"):

    python manage.py spectacular --format openapi-json --file docs/openapi.json
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("get", "put", "post", "patch", "delete", "head", "options")


def surface(schema: dict[str, Any]) -> set[str]:
    """Everything a client may rely on, one line each: operations, their status codes,
    their parameters, and the fields of every named schema."""
    keys: set[str] = set()
    for path, item in schema.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            where = f"{method.upper()} {path}"
            keys.add(where)
            keys.update(f"{where} {status}" for status in operation.get("responses", {}))
            keys.update(f"{where} ?{p['name']}" for p in operation.get("parameters", []) if p.get("in") == "query")
    for name, component in schema.get("components", {}).get("schemas", {}).items():
        keys.add(f"schema {name}")
        keys.update(f"{name}.{field}" for field in component.get("properties", {}))
    return keys


def listed_changes() -> str:
    text = (ROOT / "docs" / "api.md").read_text()
    match = re.search(r"^## Changes\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, 'docs/api.md has no "## Changes" section'
    return match.group(1)


@pytest.fixture(scope="module")
def current() -> set[str]:
    return surface(SchemaGenerator().get_schema(request=None, public=True))


def test_nothing_in_the_committed_schema_disappears_unless_the_changes_list_it(current: set[str]) -> None:
    committed = surface(json.loads((ROOT / "docs" / "openapi.json").read_text()))
    changes = listed_changes()
    gone = sorted(key for key in committed - current if f"`{key}`" not in changes)
    assert not gone, (
        "gone from the API since docs/openapi.json was committed; restore them, or list each one "
        'as `KEY` under "## Changes" in docs/api.md and regenerate the snapshot '
        f"(see this file's docstring): {gone}"
    )


def test_the_surface_sees_a_removed_operation_status_parameter_and_field() -> None:
    before = {
        "paths": {"/a/": {"get": {"responses": {"200": {}, "404": {}}, "parameters": [{"in": "query", "name": "q"}]}}},
        "components": {"schemas": {"A": {"properties": {"x": {}, "y": {}}}}},
    }
    after = {
        "paths": {"/a/": {"get": {"responses": {"200": {}}, "parameters": []}, "post": {"responses": {"201": {}}}}},
        "components": {"schemas": {"A": {"properties": {"x": {}}}}},
    }
    assert surface(before) - surface(after) == {"GET /a/ 404", "GET /a/ ?q", "A.y"}
