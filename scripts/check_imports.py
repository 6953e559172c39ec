"""Check the import structure against the contract in pyproject.toml ([tool.modelhub.imports]).

    python scripts/check_imports.py        # prints every violation, exit 1 if any

Reads every module of the listed packages with `ast` (imports inside functions count:
they are arrows too, only later), and fails on
- an upward arrow: a module importing a module of a higher layer;
- Django (or DRF, Celery) imported by a layer declared Django-free;
- an import cycle (a strongly connected group of modules);
- a function-level import of our own code without a comment saying why, in the files
  listed under `explained`;
- a module of the packages listed under `private` using another module's underscore
  name (`from x import _y`, `x._y`): what two modules share gets a public name.
There are no exceptions: a contract that lists `upward` or `cycles` entries (the
allowances of the first wave, issue #11) is refused, so fix the structure instead.
Imports under `if TYPE_CHECKING:` are ignored: they never run.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DJANGO = ("django", "rest_framework", "drf_spectacular", "celery", "kombu")


@dataclass(frozen=True)
class Arrow:
    importer: str
    imported: str
    line: int
    in_function: bool
    explained: bool


def _load_contract() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["modelhub"]["imports"]


def _modules(packages: list[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _function_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines.update(range(node.body[0].lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = importer if is_package else importer.rsplit(".", 1)[0]
        for _ in range(node.level - 1):
            base = base.rsplit(".", 1)[0]
        module = f"{base}.{node.module}" if node.module else base
    else:
        module = node.module or ""
    return [f"{module}.{alias.name}" for alias in node.names] + [module]


def arrows(packages: list[str]) -> tuple[dict[str, Path], list[Arrow], dict[str, set[str]]]:
    """Every import between our modules, and every third-party top-level name each module imports."""
    modules = _modules(packages)
    found: list[Arrow] = []
    external: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source, str(path))
        skip = _type_checking_lines(tree)
        inside = _function_lines(tree)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in skip:
                continue
            targets = _targets(node, name, path.name == "__init__.py")
            if isinstance(node, ast.ImportFrom):
                # `from pkg import module` is an arrow to the module; `from pkg import name` to pkg.
                named = [t for t in targets[:-1] if t in modules]
                targets = named if len(named) == len(targets) - 1 else [*named, targets[-1]]
            comment = "#" in lines[node.lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
            for target in targets:
                top = target.split(".")[0]
                if top not in packages:
                    external[name].add(top)
                    continue
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != name:
                    found.append(Arrow(name, target, node.lineno, node.lineno in inside, comment))
    return modules, found, external


def _layer_of(module: str, layers: dict[str, list[str]]) -> tuple[int, str]:
    """(rank, layer name) by the longest matching prefix; rank 0 is the top."""
    best: tuple[int, int, str] = (-1, -1, "")
    for rank, (layer, prefixes) in enumerate(layers.items()):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[0]:
                best = (len(prefix), rank, layer)
    if best[0] < 0:
        raise SystemExit(f"{module}: in no layer of the contract")
    return best[1], best[2]


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _cycles(modules: dict[str, Path], found: list[Arrow]) -> list[set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for arrow in found:
        graph[arrow.importer].add(arrow.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    counter = 0

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in modules:
        if module not in index:
            visit(module)
    return groups


def private_uses(packages: list[str]) -> list[str]:
    """`module:line: name` for each use of another module's underscore name in `packages`."""
    modules = _modules(packages)
    found: list[str] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        aliases: set[str] = set()  # local names bound to our modules
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _targets(node, name, path.name == "__init__.py")[-1]
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__") and target in modules:
                        found.append(f"{name}:{node.lineno}: from {target} import {alias.name}")
                    elif f"{target}.{alias.name}" in modules:
                        aliases.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                aliases.update(a.asname for a in node.names if a.asname and a.name in modules)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{name}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def violations(contract: dict | None = None) -> list[str]:
    contract = contract or _load_contract()
    layers: dict[str, list[str]] = contract["layers"]
    packages = sorted({prefix.split(".")[0] for prefixes in layers.values() for prefix in prefixes})
    modules, found, external = arrows(packages)
    problems: list[str] = [
        f"pyproject.toml lists {key!r} exceptions: none are accepted any more (fix the structure)"
        for key in ("upward", "cycles")
        if contract.get(key)
    ]

    for arrow in found:
        rank_from, layer_from = _layer_of(arrow.importer, layers)
        rank_to, layer_to = _layer_of(arrow.imported, layers)
        if rank_to >= rank_from:
            continue
        where = "inside a function" if arrow.in_function else "at the top"
        problems.append(
            f"upward arrow {arrow.importer}:{arrow.line} ({layer_from}) -> {arrow.imported} ({layer_to}), {where}"
        )

    django_free = contract.get("django_free", [])
    for module, names in sorted(external.items()):
        _, layer = _layer_of(module, layers)
        if layer in django_free and names & set(DJANGO):
            problems.append(f"{module} ({layer}, Django-free) imports {sorted(names & set(DJANGO))}")

    for group in _cycles(modules, found):
        problems.append(f"import cycle: {' <-> '.join(sorted(group))}")

    explained = contract.get("explained", [])
    for arrow in found:
        if arrow.in_function and not arrow.explained and any(_matches(arrow.importer, p) for p in explained):
            problems.append(f"{arrow.importer}:{arrow.line}: import inside a function without a comment saying why")

    for use in private_uses(contract.get("private", [])):
        problems.append(f"{use}: another module's private name (give it a public one)")
    return problems


def main() -> int:
    problems = violations()
    for problem in problems:
        print(problem)
    print(f"{len(problems)} import-structure violation(s)" if problems else "import structure: OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
