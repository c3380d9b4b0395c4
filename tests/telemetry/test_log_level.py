"""``telemetry.log_level`` sets the served gateway's log level; ``MCP_GATEWAY_LOG_LEVEL`` wins over it.
A level that is not one is a clear error, in the file and in the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from conftest import free_port, wait_until
from mcp_gateway.cli import app
from mcp_gateway.config import Settings

EXE = Path(sys.executable).parent / "mcp-gateway"


def _serve_log(folder: Path, level: str, env_level: str | None) -> str:
    """Start ``mcp-gateway serve`` with ``telemetry.log_level: level``; its log once it is up."""
    port = free_port()
    subprocess.run([str(EXE), "init", str(folder), "--port", str(port)], check=True, capture_output=True)
    config = folder / "gateway.yaml"
    config.write_text(config.read_text() + f"telemetry:\n  log_level: {level}\n")
    env = {k: v for k, v in os.environ.items() if k != "MCP_GATEWAY_LOG_LEVEL"}
    if env_level is not None:
        env["MCP_GATEWAY_LOG_LEVEL"] = env_level
    log = folder / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(EXE), "serve", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT, env=env
        )

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=60, what="the gateway")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return log.read_text()


@pytest.mark.e2e
def test_the_configured_level_quiets_the_served_gateway_and_the_environment_wins(tmp_path: Path) -> None:
    # The start logs at INFO (audit keys created, upstream connected): quiet at WARNING...
    quiet = _serve_log(tmp_path / "quiet", "warning", None)
    assert " INFO " not in quiet, quiet
    # ...and not when the operator's environment asks for INFO.
    loud = _serve_log(tmp_path / "loud", "WARNING", "info")
    assert " INFO mcp_gateway.audit.keys: created audit key" in loud, loud


def test_a_level_that_is_not_one_is_refused_in_the_file_and_in_the_environment(tmp_path: Path) -> None:
    assert Settings.model_validate({"telemetry": {"log_level": "debug"}}).telemetry.log_level == "DEBUG"
    config = tmp_path / "gateway.yaml"
    config.write_text("telemetry:\n  log_level: verbose\n")
    checked = CliRunner().invoke(app, ["config", "check", "-c", str(config)])
    assert checked.exit_code != 0 and "log_level" in checked.output
    env = {**os.environ, "MCP_GATEWAY_LOG_LEVEL": "verbose"}
    ran = subprocess.run([str(EXE), "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    assert ran.stderr.strip() == (
        "error: MCP_GATEWAY_LOG_LEVEL `verbose` is not a log level:"
        " use one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    )
