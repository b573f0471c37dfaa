"""The engine (`flowsci`) never imports a domain (`flowsci_domains`)."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys

from conftest import REPO

import flowsci


def test_no_engine_module_mentions_flowsci_domains():
    offenders = []
    for path in sorted((REPO / "flowsci").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(REPO)}:{node.lineno}" for n in names
                          if n.split(".")[0] == "flowsci_domains"]
    assert not offenders, offenders


def test_importing_every_engine_module_loads_no_domain():
    modules = [m.name for m in pkgutil.walk_packages(flowsci.__path__, "flowsci.")
               if m.name != "flowsci.__main__"]
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'flowsci_domains')\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert "flowsci.training" in modules and "flowsci.data" in modules


def _engine_imports() -> dict[str, set[str]]:
    """module -> the flowsci modules it imports anywhere (also inside functions), except
    under ``if TYPE_CHECKING:`` (annotations only)."""
    modules = {}
    for path in sorted((REPO / "flowsci").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
                   for n in ast.walk(node)}
        targets = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_engine_modules_import_each_other_without_cycles():
    """No import circle between modules (a package importing its own submodules is not one)."""
    graph = _engine_imports()
    cycles = []
    for start in graph:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start and not all(p.startswith(start + ".") or p == start for p in path):
                    cycles.append(" -> ".join([*path, start]))
                elif nxt not in path and nxt > start:  # each cycle once, from its smallest module
                    stack.append((nxt, [*path, nxt]))
    assert not cycles, "\n".join(sorted(set(cycles)))
