"""The face owns its transport: no SDK server transport on the path, and no SDK private name read.

Read from the source (``ast``), so the rule holds for code paths no other test reaches:

- no module of ``mcp_gateway.http`` or ``mcp_gateway.core`` imports the SDK's server transport or
  session machinery (its session manager, its Streamable HTTP transports, its server session and
  runner, the low-level ``Server``);
- no module of ``src/`` imports a private SDK module or name (``mcp._x``, ``from mcp... import _x``),
  reads one by ``getattr(obj, "_x")``, or reaches ``obj._x`` for an attribute the SDK itself keeps
  private (every ``self._x`` the installed ``mcp`` package assigns).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import mcp
import pytest

SRC = Path(__file__).parents[2] / "src" / "mcp_gateway"
SDK = Path(mcp.__file__).parent
TRANSPORT = (
    "mcp.server.streamable_http_manager",
    "mcp.server.streamable_http",
    "mcp.server._streamable_http_modern",
    "mcp.server.session",
    "mcp.server.runner",
    "mcp.server.lowlevel",
    "mcp.server.sse",
    "mcp.server.stdio",
)


def _modules(root: Path) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(root.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _imports(tree: ast.Module) -> Iterator[tuple[str, list[str]]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [alias.name for alias in node.names]


@cache
def _sdk_private_attributes() -> frozenset[str]:
    """Every ``self._x`` the installed SDK assigns: the state it keeps to itself."""
    names: set[str] = set()
    for _, tree in _modules(SDK):
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                names.add(node.attr)
    return frozenset(names)


def test_the_face_and_the_core_import_no_sdk_server_transport() -> None:
    found = [
        f"{path.relative_to(SRC)}: {module}"
        for package in ("http", "core")
        for path, tree in _modules(SRC / package)
        for module, _ in _imports(tree)
        if module.startswith(TRANSPORT)
    ]
    assert found == []


def test_no_source_module_imports_a_private_sdk_name() -> None:
    found = []
    for path, tree in _modules(SRC):
        for module, names in _imports(tree):
            if not module.startswith(("mcp.", "mcp_types")) and module not in ("mcp", "mcp_types"):
                continue
            private = [part for part in module.split(".") if part.startswith("_")]
            private += [name for name in names if name.startswith("_")]
            if private:
                found.append(f"{path.relative_to(SRC)}: {module} {private}")
    assert found == []


def test_no_source_module_reads_an_attribute_the_sdk_keeps_private() -> None:
    private = _sdk_private_attributes()
    assert {"_server_instances", "_session_owners", "_connection"} <= private  # the scan sees the SDK
    found = []
    for path, tree in _modules(SRC):
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in private
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: .{node.attr}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in private
            ):
                where = f"{path.relative_to(SRC)}:{node.lineno}"
                found.append(f"{where}: {node.func.id}(..., {node.args[1].value!r})")
    assert found == []


@pytest.mark.parametrize("source", ["x = manager._server_instances", 'getattr(session, "_connection", None)'])
def test_the_private_attribute_scan_finds_what_it_looks_for(source: str, tmp_path: Path) -> None:
    private = _sdk_private_attributes()
    tree = ast.parse(source)
    hits = [
        node
        for node in ast.walk(tree)
        if (isinstance(node, ast.Attribute) and node.attr in private)
        or (isinstance(node, ast.Constant) and node.value in private)
    ]
    assert hits
