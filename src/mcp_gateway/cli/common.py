"""What every ``mcp-gateway`` command shares: the config option, settings, errors, time parsing.

The environment is read here and nowhere else (``MCP_GATEWAY_CONFIG``, ``MCP_GATEWAY_MASTER_KEY``,
``MCP_GATEWAY_MASTER_KEY_FILE``).
Secret values enter only through stdin or a hidden prompt, never argv, and are never printed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from mcp_gateway.config import Settings, load_settings
from mcp_gateway.errors import ConfigError, GatewayError

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        help="gateway.yaml (default: $MCP_GATEWAY_CONFIG, else ./gateway.yaml if present)",
    ),
]


ExpiresOpt = Annotated[
    str | None,
    typer.Option(
        metavar="WHEN",
        help="when it stops working: 12h, 30d, 2w from now, or an ISO-8601 time (default: never)",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="print one JSON object per line (times as Unix seconds)")
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
    """The master key text: ``$MCP_GATEWAY_MASTER_KEY``, else the file ``$MCP_GATEWAY_MASTER_KEY_FILE`` names.

    The file form is for container secrets (a Docker secret under ``/run/secrets``, a Kubernetes secret
    volume), so the key stays out of the process environment. It holds what the variable would (one
    urlsafe-base64 key, or a comma-separated list, current first); surrounding whitespace is ignored.
    It may be readable by its group (a Kubernetes secret volume with ``fsGroup``), never by others.

    Raises:
        typer.Exit: both variables are set, or the file is unreadable, not a regular file or open to
            other users, or empty (the message names the path and mode, never the content).
    """
    value = os.environ.get("MCP_GATEWAY_MASTER_KEY") or None
    path = os.environ.get("MCP_GATEWAY_MASTER_KEY_FILE") or None
    if path is None:
        return value
    if value is not None:
        raise fail("set MCP_GATEWAY_MASTER_KEY or MCP_GATEWAY_MASTER_KEY_FILE, not both")
    from mcp_gateway.storage.secret_file import SecretFileError, read_secret_file

    try:
        return read_secret_file(path, "MCP_GATEWAY_MASTER_KEY_FILE")
    except SecretFileError as exc:
        raise fail(str(exc)) from None


class _Debug:
    on = False


def set_debug(on: bool) -> None:
    """``--debug`` or ``MCP_GATEWAY_DEBUG=1``: failures print their traceback before their one line."""
    _Debug.on = on


def debug_enabled() -> bool:
    return _Debug.on


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: MESSAGE`` (one line, stderr) and return the ``typer.Exit`` to raise.

    Called inside an ``except`` block with ``--debug`` on, the exception's traceback comes first.
    """
    if _Debug.on and sys.exc_info()[1] is not None:
        traceback.print_exc(file=sys.stderr)
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _iso_time(value: str) -> float | None:
    """An ISO-8601 date or time (UTC if it names no zone), or None."""
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def parse_since(value: str, now: float, *, option: str = "--since") -> float:
    """A point in the past: ``90s``/``30m``/``1h``/``2d``/``1w`` ago, ``today`` or ``yesterday`` (UTC
    midnight, as the CLI prints times in UTC), or an ISO-8601 date or time (UTC if it names no zone).

    Raises:
        GatewayError: none of those (the message names ``option``), or a time in the future.
    """
    word = value.strip().lower()
    match = DURATION.match(word)
    if match:
        return now - int(match.group(1)) * _UNITS[match.group(2)]
    if word in ("today", "yesterday"):
        day = dt.datetime.fromtimestamp(now, dt.UTC).date()
        if word == "yesterday":
            day -= dt.timedelta(days=1)
        return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()
    point = _iso_time(value)
    if point is None:
        raise GatewayError(
            f"{option} `{value}` is not a duration (30m, 1h, 2d), `today`, `yesterday` or an ISO-8601 time"
        )
    if point > now:
        raise GatewayError(f"{option} `{value}` is in the future")
    return point


def parse_expiry(value: str, now: float, *, option: str = "--expires") -> float:
    """A point in the future: ``90m``/``12h``/``30d``/``2w`` from now, or an ISO-8601 time (UTC if it
    names no zone).

    Raises:
        GatewayError: neither (the message names ``option``), or a time already past.
    """
    match = DURATION.match(value.strip().lower())
    if match:
        amount = int(match.group(1))
        if amount == 0:
            raise GatewayError(f"{option} `{value}` must be longer than zero")
        return now + amount * _UNITS[match.group(2)]
    point = _iso_time(value)
    if point is None:
        raise GatewayError(f"{option} `{value}` is not a duration (12h, 30d, 2w) or an ISO-8601 time")
    if point <= now:
        raise GatewayError(f"{option} `{value}` is already past")
    return point


def iso(ts: float | None) -> str:
    """A Unix time as ISO-8601 UTC to the second (``2026-12-03T21:23:40+00:00``); ``-`` for None."""
    return "-" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")
