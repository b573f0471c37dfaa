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
