"""Every environment variable the code reads is in .env.example, and every one listed there
is read; reads go through config/env.py's typed readers (no test database needed)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("config", "common", "accounts", "registry", "inference", "monitoring", "dashboard", "workers", "platform")
READERS = {"env_str", "env_bool", "env_int", "env_float", "env_list"}
# Read from the environment but not settings an operator sets.
NOT_SETTINGS = {
    "STATS_FILE": "the benchmark harness's hand-off (bench/harness.py), not a setting",
    "PYTHONPATH": "passed through to the validation child process",
    "DJANGO_SETTINGS_MODULE": "set by the entry points",
}
# Files that still read os.environ themselves, and why.
RAW_READS_ALLOWED = {
    "config/env.py": "the typed readers themselves",
    "inference/runtime/validation.py": "copies the whole environment into the validation child",
}


def _python_files() -> list[Path]:
    files = [ROOT / "manage.py"]
    for package in PACKAGES:
        files += [p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts]
    return files


def _is_os_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def _reads(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(names read through the typed readers, names read from os.environ directly)."""
    typed: set[str] = set()
    raw: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = node.args[0].value
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if called in READERS:
                typed.add(name)
            elif isinstance(func, ast.Attribute) and func.attr == "get" and _is_os_environ(func.value):
                raw.add(name)
            elif isinstance(func, ast.Attribute) and func.attr == "getenv":
                raw.add(name)
        elif isinstance(node, ast.Subscript) and _is_os_environ(node.value) and isinstance(node.ctx, ast.Load):
            if isinstance(node.slice, ast.Constant):
                raw.add(node.slice.value)
    return typed, raw


def _scan() -> tuple[set[str], dict[str, set[str]]]:
    read: set[str] = set()
    raw_by_file: dict[str, set[str]] = {}
    for path in _python_files():
        typed, raw = _reads(ast.parse(path.read_text(), str(path)))
        read |= typed | raw
        if raw:
            raw_by_file[str(path.relative_to(ROOT))] = raw
    return read - set(NOT_SETTINGS), raw_by_file


def _listed() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def test_every_variable_the_code_reads_is_listed_in_env_example() -> None:
    read, _ = _scan()
    assert not read - _listed(), f"read but not in .env.example: {sorted(read - _listed())}"


def test_every_variable_in_env_example_is_read_by_the_code() -> None:
    read, _ = _scan()
    assert not _listed() - read, f"in .env.example but read nowhere: {sorted(_listed() - read)}"


def test_variables_are_read_through_the_typed_readers() -> None:
    _, raw_by_file = _scan()
    unexpected = {f: names for f, names in raw_by_file.items() if f not in RAW_READS_ALLOWED}
    assert not unexpected, f"read from os.environ instead of config/env.py: {unexpected}"


def test_the_scan_sees_both_kinds_of_read() -> None:
    typed, raw = _reads(ast.parse('env_int("A", 1)\nos.environ.get("B")\nos.environ["C"]\nos.getenv("D")'))
    assert (typed, raw) == ({"A"}, {"B", "C", "D"})
