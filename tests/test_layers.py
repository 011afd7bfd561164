"""The layer rule, read from the source with ``ast``: every import points down, and no private name crosses.

The order is storage → format → indexes → core → deep_memory → vectorstore → integrations, with
query_lang beside core (core may use it; it never imports tensordb). Function-level
imports count like module-level ones.
"""

from __future__ import annotations

import ast
import os
from collections import defaultdict
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("tensordb", "query_lang")

#: Layer of each folder (or top-level module); a module may import only from its own layer or lower ones.
LAYERS = {
    "tensordb.errors": 0,
    "tensordb.version": 0,
    "tensordb.storage": 1,
    "tensordb.format": 2,
    "tensordb.indexes": 3,
    "query_lang": 4,
    "tensordb.core": 5,
    "tensordb.deep_memory": 6,
    "tensordb.vectorstore": 7,
    "tensordb.integrations": 8,
    "tensordb.cli": 9,
    "tensordb.demo": 9,
    "tensordb.__main__": 10,
    "tensordb": 11,  # the package's own __init__: the public face over everything
}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module imported from
    names: tuple[str, ...]  # names taken from it (empty for ``import x``)
    line: int


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
    if rel[-1] == "__init__":
        rel = rel[:-1]
    return ".".join(rel)


def _source_files() -> list[str]:
    found = []
    for package in PACKAGES:
        for dirpath, _dirs, files in os.walk(os.path.join(ROOT, package)):
            found += [os.path.join(dirpath, f) for f in files if f.endswith(".py")]
    return sorted(found)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _imports(path: str, runtime_only: bool) -> list[Import]:
    """The imports of one file; ``runtime_only`` leaves out those under ``if TYPE_CHECKING:``."""
    module = _module_name(path)
    is_package = path.endswith("__init__.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in _runtime_nodes(tree) if runtime_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            target = _resolve(module, is_package, node.level, node.module)
            found.append(Import(module, target, tuple(a.name for a in node.names), node.lineno))
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``, which only type checkers run."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    raise AssertionError(f"module {module} has no layer in LAYERS")


def _folder(module: str) -> str:
    """The folder a module lives in (its package), e.g. ``tensordb.core``."""
    return module.rsplit(".", 1)[0] if module.count(".") else module


def _all_imports(runtime_only: bool = False) -> list[Import]:
    return [i for path in _source_files() for i in _imports(path, runtime_only) if _ours(i.target)]


def _known_modules() -> set[str]:
    return {_module_name(p) for p in _source_files()}


def _target_module(imp: Import, modules: set[str]) -> list[str]:
    """The modules an import reaches: ``from pkg import mod`` reaches ``pkg.mod``."""
    reached = [imp.target] if imp.target in modules else []
    reached += [f"{imp.target}.{n}" for n in imp.names if f"{imp.target}.{n}" in modules]
    return reached or [imp.target]


def test_every_import_points_down():
    upward = [
        f"{i.importer}:{i.line} imports {i.target}"
        for i in _all_imports()
        if _layer(i.target) > _layer(i.importer)
    ]
    assert not upward, "\n".join(upward)


def test_query_lang_never_imports_tensordb():
    found = [f"{i.importer}:{i.line} imports {i.target}" for i in _all_imports()
             if i.importer.startswith("query_lang") and i.target.startswith("tensordb")]
    assert not found, "\n".join(found)


def test_there_are_no_import_cycles():
    modules = _known_modules()
    graph: dict[str, set[str]] = defaultdict(set)
    # Type-only imports never run, so they cannot make an import cycle (they still must point down).
    for imp in _all_imports(runtime_only=True):
        for target in _target_module(imp, modules):
            # A package's __init__ re-exports its modules: that edge points into the package, not back out.
            if target != imp.importer and not imp.importer.startswith(target + "."):
                graph[imp.importer].add(target)
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(modules):
        if start not in state:
            visit(start, [start])
    assert not cycles, "\n".join(cycles)


def test_no_private_name_is_imported_from_another_module():
    private = [
        f"{i.importer}:{i.line} imports {name} from {i.target}"
        for i in _all_imports()
        for name in i.names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not private, "\n".join(private)


def _private_definitions() -> dict[str, set[str]]:
    """Private attribute name → the folders whose code defines it (methods, attributes set on self, classes)."""
    defined: dict[str, set[str]] = defaultdict(set)
    for path in _source_files():
        folder = _folder(_module_name(path))
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            name = None
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = node.name
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                name = node.attr
            elif isinstance(node, (ast.AnnAssign, ast.Assign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(target, ast.Name):
                        defined[target.id].add(folder)
            if name is not None:
                defined[name].add(folder)
    return defined


def test_no_private_attribute_is_reached_from_another_folder():
    defined = _private_definitions()
    reached = []
    for path in _source_files():
        folder = _folder(_module_name(path))
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            owners = defined.get(node.attr, set())
            if owners and folder not in owners:
                reached.append(f"{_module_name(path)}:{node.lineno} reaches .{node.attr} (defined in {sorted(owners)})")
    assert not reached, "\n".join(reached)
