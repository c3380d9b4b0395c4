"""Commands that only read never create a store, and without a config they say where they looked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mcp_gateway.cli import app

runner = CliRunner()
READERS = [
    ["audit", "verify"],
    ["audit", "tail"],
    ["audit", "query"],
    ["agents", "list"],
    ["admin", "list"],
    ["approvals", "list"],
    ["approvals", "show", "apr_x"],
]


@pytest.fixture
def empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MCP_GATEWAY_CONFIG", raising=False)
    return tmp_path


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_a_read_only_command_without_a_config_fails_saying_where_it_looked(
    command: list[str], empty_folder: Path
) -> None:
    result = runner.invoke(app, command)
    assert result.exit_code == 1
    assert "no gateway config found" in result.stderr and str(empty_folder / "gateway.yaml") in result.stderr
    assert list(empty_folder.iterdir()) == []  # no ./.gateway, no empty store: no false all-clear


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_a_read_only_command_against_missing_stores_fails_and_creates_none(
    command: list[str], empty_folder: Path
) -> None:
    config = empty_folder / "gateway.yaml"
    config.write_text(yaml.safe_dump({"data_dir": "data"}))
    result = runner.invoke(app, [*command, "-c", str(config)])
    assert result.exit_code == 1 and "no " in result.stderr and "store" in result.stderr
    assert "Traceback" not in result.output
    data = empty_folder / "data"
    assert not data.exists() or list(data.iterdir()) == []
