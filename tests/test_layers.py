"""The layers of optdsl/ (DESIGN.md "Invariants"): the import graph between its modules is
acyclic, nothing imports the command line, and an import inside a function only defers a heavy
optional dependency (and says so)."""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "optdsl")
HEAVY = {"sympy", "matplotlib", "ray", "sklearn", "lark", "torch._inductor", "mnist1d"}


def modules() -> dict:
    """module name -> path, for every .py under optdsl/ (optdsl.search lives in search/)."""
    out = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = path
    return out


MODULES = modules()


def _target(module: str, node: ast.ImportFrom | ast.Import) -> list:
    """The optdsl modules an import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    is_package = MODULES[module].endswith("__init__.py")
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[:len(base) - node.level + 1]
        name = ".".join(base + ([node.module] if node.module else []))
    else:
        name = node.module or ""
    names = [name] + [f"{name}.{a.name}" for a in node.names]
    return [n for n in names if n in MODULES and n != module]


def imports() -> list:
    """(importer, imported, inside a function?, line, the line's text) for every import."""
    out = []
    for module, path in MODULES.items():
        source = open(path).read()
        lines = source.splitlines()
        tree = ast.parse(source)
        in_function = set()
        for f in ast.walk(tree):
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                in_function |= {id(n) for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = _target(module, node) or [None]
                for name in names:
                    out.append((module, name, id(node) in in_function, node.lineno,
                                lines[node.lineno - 1], node))
    return out


def test_the_import_graph_of_optdsl_is_acyclic():
    graph: dict = {m: set() for m in MODULES}
    for importer, imported, *_ in imports():
        if imported is not None and imported != importer and not importer.startswith(imported + "."):
            graph[importer].add(imported)
    state: dict = {}

    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycle = path[path.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n, path + [n])
        state[m] = "done"
    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_nothing_imports_the_command_line():
    for importer, imported, *_ in imports():
        if imported is not None and imported.startswith("optdsl.cli"):
            assert importer.startswith("optdsl.cli"), f"{importer} imports {imported}"


def test_imports_inside_functions_only_defer_heavy_optional_dependencies():
    bad = []
    for importer, imported, inside, line, text, node in imports():
        if not inside:
            continue
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        heavy = any(n == h or n.startswith(h + ".") for n in names for h in HEAVY)
        # or an optdsl module that pulls one in, with the reason on the line
        commented = "#" in text and any(w in text for w in ("heavy", "sympy", "matplotlib", "ray"))
        if not commented or (imported is None and not heavy):
            bad.append(f"{MODULES[importer]}:{line}: {text.strip()}")
    assert not bad, "imports inside functions that defer nothing heavy (or say nothing):\n" + \
        "\n".join(bad)


def test_no_function_is_over_60_lines_without_saying_why():
    """A function of more than 60 lines says in a comment of its first lines why it must be one
    piece ("# one piece: ...")."""
    long = []
    for path in MODULES.values():
        lines = open(path).read().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                head = "\n".join(lines[node.lineno - 1:node.lineno + 8])
                if size > 60 and "# one piece:" not in head:
                    long.append(f"{path}:{node.lineno}: {node.name} ({size} lines)")
    assert not long, "\n".join(long)
