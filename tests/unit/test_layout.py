"""The rooms of authproxy_local/ (docs/architecture.md) keep their shape: data flows down only, no
module reaches into another's private names, no file grows past 600 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "authproxy_local"

LEVEL = {"core": 0, "install": 1, "render": 2, "keycloak": 2, "cluster": 3, "mesh": 3, "harness": 4,
         "demo": 5, "engine": 5, "bench": 5, "soak": 5,
         "together": 5}
"""A room may import the rooms of a lower level (and itself), never one of its own level or above."""


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "authproxy_local" else ""


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def _imports(name: str, tree: ast.Module) -> list[tuple[str, list[str], int]]:
    """(imported module, names, line) of every import of an authproxy_local module."""
    out = []
    pkg = name if (ROOT.parent / Path(*name.split("."), "__init__.py")).exists() else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            if mod.startswith("authproxy_local"):
                out.append((mod, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("authproxy_local")]
    return out


def test_every_room_has_a_docstring_saying_what_it_imports() -> None:
    for room in LEVEL:
        init = ROOT / room / "__init__.py" if (ROOT / room).is_dir() else ROOT / f"{room}.py"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert doc, f"{init} has no docstring"
        assert "import" in doc.lower(), f"{init}'s docstring does not say what the room imports"


def test_data_flows_down_only() -> None:
    wrong = []
    for name, tree in _modules().items():
        here = _room(name)
        for mod, _, line in _imports(name, tree):
            there = _room(mod)
            if not there or there == here or here not in LEVEL:
                continue
            if LEVEL[there] >= LEVEL[here]:
                wrong.append(f"{name}:{line} imports {mod} (room {there} is not below {here})")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_a_private_name_of_another() -> None:
    wrong = []
    for name, tree in _modules().items():
        for mod, names, line in _imports(name, tree):
            wrong += [f"{name}:{line} imports {mod}.{n}" for n in names if n.startswith("_") and mod != name]
    assert not wrong, "\n".join(wrong)


def test_no_file_over_600_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long


def test_the_layout_checks_can_fail() -> None:
    tree = ast.parse("from authproxy_local.harness import Harness\nfrom ..core.net import _RESOLVE_MAP\n")
    found = _imports("authproxy_local.core.processes", tree)
    assert found == [("authproxy_local.harness", ["Harness"], 1), ("authproxy_local.core.net", ["_RESOLVE_MAP"], 2)]
