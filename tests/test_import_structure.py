"""The import structure has no upward arrow and no cycle, and pyproject.toml lists no exceptions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _checker():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("check_imports", ROOT / "scripts" / "check_imports.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_import_structure_keeps_the_contract() -> None:
    assert _checker().violations() == []


def test_an_upward_arrow_a_new_cycle_and_django_in_the_runtime_are_caught() -> None:
    checker = _checker()
    contract = checker._load_contract()
    # the runtime below common: every RuntimeErrorBase import of common.errors is upward
    flipped = dict(contract, layers={**{k: v for k, v in contract["layers"].items() if k != "common"}})
    flipped["layers"] = {"common": ["common"], **flipped["layers"]}
    assert any("upward arrow inference.runtime.errors" in p for p in checker.violations(flipped))
    # an exception listed in the contract is refused, not honoured
    upward = [{"importer": "inference.edge", "imported": "monitoring", "reason": "r"}]
    assert any("'upward' exceptions" in p for p in checker.violations(dict(contract, upward=upward)))
    # the Django glue declared Django-free
    assert any("Django-free" in p for p in checker.violations(dict(contract, django_free=["shared-django"])))


def test_a_cycle_between_two_modules_is_reported() -> None:
    checker = _checker()
    modules, found, _ = checker.arrows(["registry"])
    back = checker.Arrow("registry.models", "registry.services", 1, in_function=True, explained=True)
    groups = checker._cycles(modules, [*found, back])
    assert any({"registry.models", "registry.services"} <= group for group in groups)
    assert checker._cycles(modules, found) == []


def test_a_module_using_another_modules_private_name_is_reported(tmp_path: Path, monkeypatch: Any) -> None:
    checker = _checker()
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def _helper() -> int:\n    return 1\n")
    (package / "b.py").write_text("from pkg.a import _helper\nfrom pkg import a\n\nx = a._helper() + _helper()\n")
    monkeypatch.setattr(checker, "ROOT", tmp_path)
    uses = checker.private_uses(["pkg"])
    assert any(u.endswith("from pkg.a import _helper") for u in uses)
    assert any(u.endswith("a._helper") for u in uses)
