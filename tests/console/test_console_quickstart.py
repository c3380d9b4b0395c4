"""The quickstart turns the console on, for the admin it tells you to create, and prints where it is."""

from __future__ import annotations

from pathlib import Path

import yaml

from mcp_gateway.config import Settings
from mcp_gateway.demo.quickstart import _instructions
from mcp_gateway.demo.quickstart_files import gateway_yaml


def test_the_quickstart_config_serves_the_console_to_the_admin_named_you(tmp_path: Path) -> None:
    raw = yaml.safe_load(gateway_yaml(tmp_path, 8123))
    raw.update(data_dir=str(tmp_path / "data"), policies=str(tmp_path / "policies"))
    console = Settings.model_validate(raw).console
    assert console.enabled and console.path == "/console" and console.roles == {"you": "admin"}


def test_the_quickstart_banner_names_the_console_and_how_to_log_in(tmp_path: Path) -> None:
    text = _instructions(tmp_path / "gateway.yaml", tmp_path, "http://127.0.0.1:8123/mcp", "mgw_token")
    line = next(line for line in text.splitlines() if "/console" in line)
    assert "http://127.0.0.1:8123/console" in line and "admin create you" in line
    assert "admin create you" in text.split("/console", 1)[0]  # the command comes before the URL
