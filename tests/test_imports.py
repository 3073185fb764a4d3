"""No import cycle inside hpi: every module's hpi imports, read from its source, form a graph without cycles.

An import inside a function counts as much as one at the top of the module: a deferred import that closes a cycle
hides the cycle without removing it (it only moves the failure from import time to call time). Imports under
``if TYPE_CHECKING:`` never run and are left out. ``from hpi.a import b`` is an edge to ``hpi.a.b`` when that is a
module, else to ``hpi.a``; the implicit import of a parent package is not an edge. A module named by a string that is
exactly a module path, optionally with ``:function`` (``run_isolated("hpi.selection.worker:measure_candidate")``),
is imported by whoever runs it, so it is an edge too: a cycle behind a string is still a cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import hpi

ROOT = Path(hpi.__file__).resolve().parent


def module_names() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for stmt in child.orelse:
                    visit_stmt(stmt)
                continue
            visit_stmt(child)

    def visit_stmt(node: ast.AST) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        visit(node)

    visit(tree)
    return found


NAMED_MODULE = re.compile(r"(hpi(?:\.\w+)+)(?::\w+)?")


def _named_modules(tree: ast.AST, modules: dict[str, Path]) -> set[str]:
    """Modules named by a string constant that is exactly ``hpi.pkg.mod`` or ``hpi.pkg.mod:function``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = NAMED_MODULE.fullmatch(node.value)
            if match and match.group(1) in modules:
                found.add(match.group(1))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name] |= _named_modules(tree, modules)
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in modules}
                continue
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in modules:
                    graph[name].add(target)
                elif base in modules:
                    graph[name].add(base)
    for name in graph:
        graph[name].discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "hpi.api" in graph["hpi"]  # create_model imports it inside the function
    assert "hpi.selection.measure" in graph["hpi.selection.decision"]  # from hpi.selection import measure


def test_the_graph_sees_modules_run_by_name():
    graph = import_graph()
    assert "hpi.selection.worker" in graph["hpi.selection.measure"]  # WORKER = "hpi.selection.worker:measure_..."
    tree = ast.parse('run_isolated("hpi.selection.worker:measure_candidate"); log("see hpi.selection.worker")')
    assert _named_modules(tree, module_names()) == {"hpi.selection.worker"}


def test_no_import_cycle_inside_hpi():
    graph = import_graph()
    found = cycles(graph)
    detail = "; ".join(
        " / ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) for c in found
    )
    assert not found, f"import cycles: {detail}"
