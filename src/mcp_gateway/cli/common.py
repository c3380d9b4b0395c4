"""What every ``mcp-gateway`` command shares: the config option, settings, errors, time parsing.

The environment is read here and nowhere else (``MCP_GATEWAY_CONFIG``, ``MCP_GATEWAY_MASTER_KEY``).
Secret values enter only through stdin or a hidden prompt, never argv, and are never printed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from mcp_gateway.config import Settings, load_settings
from mcp_gateway.errors import ConfigError, GatewayError

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="gateway.yaml (default: $MCP_GATEWAY_CONFIG, else ./gateway.yaml if present)"
    ),
]


def load_cli_settings(config: Path | None, *, require: bool = False, **overrides: Any) -> Settings:
    """Settings from ``--config``, else ``$MCP_GATEWAY_CONFIG``, else ``./gateway.yaml``, else defaults.

    Args:
        config: the ``--config`` value.
        require: fail instead of using defaults when no config file is found (commands that only
            read: their answer about the defaults' empty stores would be a false all-clear).

    Raises:
        ConfigError: ``require`` and no config file found (saying where it looked), or a bad config.
    """
    if config is None:
        env = os.environ.get("MCP_GATEWAY_CONFIG")
        config = Path(env) if env else (Path("gateway.yaml") if Path("gateway.yaml").exists() else None)
        if config is None and require:
            raise ConfigError(
                "no gateway config found: pass -c/--config, set MCP_GATEWAY_CONFIG, or run in the folder"
                f" holding gateway.yaml (looked for `{Path('gateway.yaml').resolve()}`)"
            )
    return load_settings(config, **overrides)


def read_settings(config: Path | None) -> Settings:
    """``load_cli_settings(config, require=True)`` with its error as one line and exit 1."""
    try:
        return load_cli_settings(config, require=True)
    except GatewayError as exc:
        raise fail(str(exc)) from None


def master_key_env() -> str | None:
    return os.environ.get("MCP_GATEWAY_MASTER_KEY") or None


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


DURATION = re.compile(r"^(\d+)([smhdw])$")


def parse_expiry(value: str, now: float) -> float:
    """``30d``/``12h``/``90m``/``2w`` from now, or an ISO-8601 timestamp (UTC if no zone)."""
    match = DURATION.match(value)
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
        return now + int(match.group(1)) * unit
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise GatewayError(f"expiry `{value}` is neither a duration like 30d nor an ISO-8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def iso(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")
