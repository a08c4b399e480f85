"""The package's shape, read from its source with ``ast``: no import cycles, no use of another
module's private names, small modules, and file renames in at most two places."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "mteb_finegrain"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
MAX_LINES = 500
MAX_RENAMING_MODULES = 2


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for name, path in MODULES.items()}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str | None:
    """The absolute module a ``from ... import`` reads from (relative imports resolved)."""
    if node.level == 0:
        return node.module
    base = module if _is_package(module) else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{node.module}" if node.module else base


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (never executed, so no cycle)."""
    hidden = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return hidden


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """``(imported module, names taken from it, line)`` of every import the module executes,
    at module level or inside functions; only modules of the package."""
    tree = TREES[module]
    hidden = _type_checking_only(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names if alias.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            if source and source.split(".")[0] == PACKAGE:
                found.append((source, [alias.name for alias in node.names], node.lineno))
    return found


def _edges(module: str) -> set[str]:
    """The package modules ``module`` imports: a name that is a submodule counts as that module."""
    targets = set()
    for source, names, _ in _imports(module):
        submodules = [f"{source}.{name}" for name in names if f"{source}.{name}" in MODULES]
        targets.update(submodules or [source])
        if submodules and len(submodules) < len(names):
            targets.add(source)
    return {target for target in targets if target in MODULES and target != module}


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One cycle of ``graph`` (node -> nodes it points to), as the list of nodes around it, else None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in graph[module]:
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[module] = 2
        return None

    for module in graph:
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_the_package_is_found():
    assert {"mteb_finegrain", "mteb_finegrain.runner", "mteb_finegrain.task", "mteb_finegrain._plugin", "mteb_finegrain.cli"} <= set(MODULES)


def test_no_import_cycle_between_package_modules():
    cycle = _find_cycle({module: sorted(_edges(module)) for module in MODULES})
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_uses_another_modules_private_names():
    offences = []
    for module in MODULES:
        bound = {}  # local name -> package module it is bound to
        for source, names, line in _imports(module):
            for name in names:
                if f"{source}.{name}" in MODULES:
                    bound[name] = f"{source}.{name}"
                elif _private(name):
                    offences.append(f"{MODULES[module].relative_to(ROOT.parent)}:{line}: from {source} import {name}")
        for node in ast.walk(TREES[module]):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and alias.name in MODULES:
                        bound[alias.asname] = alias.name
        for node in ast.walk(TREES[module]):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound and _private(node.attr):
                offences.append(f"{MODULES[module].relative_to(ROOT.parent)}:{node.lineno}: {bound[node.value.id]}.{node.attr}")
    assert offences == [], "private names used outside their module:\n" + "\n".join(offences)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_the_line_limit(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(ROOT.parent)} has {lines} lines (at most {MAX_LINES}): split it"


def _renames(tree: ast.Module) -> list[int]:
    """Lines that call ``os.replace``, ``os.rename`` or any ``.rename(...)``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            if func.attr == "rename" or (func.attr == "replace" and isinstance(func.value, ast.Name) and func.value.id == "os"):
                lines.append(node.lineno)
    return lines


def test_files_are_renamed_in_at_most_two_modules():
    renaming = {module: lines for module in MODULES if (lines := _renames(TREES[module]))}
    assert len(renaming) <= MAX_RENAMING_MODULES, f"modules that rename files (at most {MAX_RENAMING_MODULES}): {renaming}"


def test_the_checks_see_what_they_look_for():
    """Each check finds the defect it is for, in code written to show it."""
    tree = ast.parse("import os\nos.replace(a, b)\nPath(a).rename(b)\n'os.replace(a, b)'\n")
    assert _renames(tree) == [2, 3]
    relative = ast.parse("from . import cards\nfrom ..data import x\n").body
    assert _absolute("mteb_finegrain.sweep", relative[0]) == "mteb_finegrain.sweep"
    assert _absolute("mteb_finegrain.sweep.jobs", relative[1]) == "mteb_finegrain.data"
    assert _private("_name") and not _private("__version__") and not _private("name")
    assert _find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None
