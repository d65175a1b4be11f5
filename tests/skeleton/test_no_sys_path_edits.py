"""No `sys.path` edits in the packages or scripts (issue 12): modules are found because the
project is installed (`make setup`), and scripts/ is on the path because Python puts a
script's own folder there. Scans with ast, so a docstring that mentions sys.path is fine."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("scribelink", "edge_agent", "cloud_relay", "firmware")
MUTATORS = {"insert", "append", "extend", "remove", "pop", "clear", "__setitem__"}


def _is_sys_path(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "path"
            and isinstance(node.value, ast.Name) and node.value.id == "sys")


def sys_path_edits(source: str, path: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            if (f.attr in MUTATORS and _is_sys_path(f.value)) or (
                    f.attr == "addsitedir" and isinstance(f.value, ast.Name)
                    and f.value.id == "site"):
                found.append(f"{path}:{node.lineno}")
        elif isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if _is_sys_path(t) or (isinstance(t, ast.Subscript) and _is_sys_path(t.value)):
                    found.append(f"{path}:{node.lineno}")
    return sorted(found, key=lambda hit: int(hit.rsplit(":", 1)[1]))


def python_files():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))
    for f in sorted((ROOT / "scripts").iterdir()):
        if f.is_file() and (f.suffix == ".py" or f.read_bytes().startswith(b"#!/usr/bin/env py")):
            yield f


def test_the_check_finds_each_kind_of_edit():
    src = ("import sys, site\nsys.path.insert(0, 'x')\nsys.path.append('y')\n"
           "sys.path = ['z']\nsys.path += ['w']\nsite.addsitedir('v')\nprint(sys.path)\n")
    assert sys_path_edits(src, "s.py") == [f"s.py:{n}" for n in (2, 3, 4, 5, 6)]


def test_no_sys_path_edits_in_packages_or_scripts():
    files = list(python_files())
    assert any(f.name == "demo" for f in files)  # the extensionless scripts are scanned too
    found = [hit for f in files
             for hit in sys_path_edits(f.read_text(), f.relative_to(ROOT).as_posix())]
    assert not found, "sys.path edited at:\n" + "\n".join(found)
