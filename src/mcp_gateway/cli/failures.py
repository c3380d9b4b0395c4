"""How the ``mcp-gateway`` entry point ends a failed command: one ``error: ...`` line, a non-zero exit.

    usage errors (bad option, bad value)   exit 2, the message and where to find help
    GatewayError (expected failures)       exit 1, its message
    OSError, unreachable servers           exit 1, what failed and why (``strerror``), no traceback
    anything else                          exit 1, ``unexpected <Type>: ...; run with --debug for details``

With ``--debug`` (or ``MCP_GATEWAY_DEBUG=1``) the traceback is printed before that line (not for
usage errors: they are about the command line, not the code). Messages of
exceptions the gateway did not raise may hold a URL with credentials: those are masked.
"""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import typer

from mcp_gateway.cli.common import debug_enabled
from mcp_gateway.errors import GatewayError

__all__ = ["describe", "run_cli"]

_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
_MAX_CHARS = 300
# Third-party exceptions that mean "a server or file is not there", not a defect: no debug hint.
_UNREACHABLE = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "ConnectionError",
        "TimeoutError",
        "OperationalError",
        "ReadTimeout",
        "RemoteProtocolError",
    }
)


def _one_line(text: str) -> str:
    """The first non-empty line of ``text``, URL credentials masked, at most ``_MAX_CHARS``."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    line = _URL_CREDENTIALS.sub(r"\1***@", line)
    return line if len(line) <= _MAX_CHARS else line[: _MAX_CHARS - 1] + "…"


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions an ``ExceptionGroup`` (anyio task groups) wraps, flattened; else ``[exc]``."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def describe(exc: BaseException) -> tuple[str, bool]:
    """One line saying what went wrong, and whether it was unexpected (a defect, not the world).

    A group is described by its first leaf that is not a cancellation.
    """
    leaves = _leaves(exc)
    leaf = next((e for e in leaves if not _is_cancel(e)), leaves[0])
    if isinstance(leaf, GatewayError):
        return _one_line(str(leaf)) or type(leaf).__name__, False
    if isinstance(leaf, OSError):
        what = leaf.strerror or _one_line(str(leaf)) or type(leaf).__name__
        where = f" `{leaf.filename}`" if leaf.filename else ""
        return f"{what}{where}", False
    name = type(leaf).__name__
    text = _one_line(str(leaf))
    if name in _UNREACHABLE:
        return f"{name}: {text}" if text else name, False
    return f"unexpected {name}: {text}" if text else f"unexpected {name}", True


def _is_cancel(exc: BaseException) -> bool:
    return type(exc).__name__ in ("CancelledError", "Cancelled")


def _framework_error(exc: BaseException) -> tuple[str, int] | None:
    """The line and exit code of an error typer (its click) raised about the command line; else None.

    typer 0.29 carries its own copy of click: its errors derive from ``typer.TyperException`` and are
    told apart by what they hold (a usage error holds the context of the command it is about).
    """
    if not isinstance(exc, typer.TyperException):
        return None
    line = _one_line(exc.format_message()).rstrip(".") or type(exc).__name__
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        line += f"; see `{ctx.command_path} --help`"
    return line, int(getattr(exc, "exit_code", 1))


def run_cli(command: Callable[..., Any], args: Sequence[str], prog_name: str = "mcp-gateway") -> int:
    """Run the typer/click ``command`` on ``args`` and turn every failure into one line; the exit code.

    ``typer.Exit`` raised by a command (``common.fail``) keeps its code; its line is already printed.
    """
    try:
        result = command(args=list(args), prog_name=prog_name, standalone_mode=False)
    except typer.Exit as exc:  # raised outside click's own handling (e.g. an eager callback)
        return int(exc.exit_code)
    except typer.Abort as exc:
        return _error("aborted", 1, exc)
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        return 130
    except Exception as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(getattr(exc, "format_message", lambda: "")(), err=True)  # the group's help
            return int(getattr(exc, "exit_code", 2))
        framework = _framework_error(exc)
        if framework is not None:  # about the command line, not the code: no traceback even with --debug
            typer.echo(f"error: {framework[0]}", err=True)
            return framework[1]
        line, unexpected = describe(exc)
        hint = "; run with --debug for details" if unexpected and not debug_enabled() else ""
        return _error(line + hint, 1, exc)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def _error(line: str, code: int, exc: BaseException) -> int:
    if debug_enabled():
        traceback.print_exception(exc, file=sys.stderr)
    typer.echo(f"error: {line}", err=True)
    return code
