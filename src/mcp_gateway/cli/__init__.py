"""``mcp-gateway``: the admin CLI, a thin layer over the modules it calls.

The environment is read here and nowhere else (``MCP_GATEWAY_CONFIG``, ``MCP_GATEWAY_MASTER_KEY``).
Secret values enter only through stdin or a hidden prompt, never argv, and are never printed.
One module per command group; ``common.py`` holds what they share.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mcp_gateway.cli.admin import admin_app
from mcp_gateway.cli.agents import agents_app
from mcp_gateway.cli.approvals import approvals_app
from mcp_gateway.cli.audit import audit_app
from mcp_gateway.cli.common import (
    ConfigOpt,
    fail,
    load_cli_settings,
    master_key_env,
    parse_expiry,
    parse_since,
    set_debug,
)
from mcp_gateway.cli.config_cmd import config_app
from mcp_gateway.cli.db import db_app
from mcp_gateway.cli.demo import demo_app
from mcp_gateway.cli.incidents import incidents_app
from mcp_gateway.cli.init import init
from mcp_gateway.cli.policy import policy_app
from mcp_gateway.cli.quota import quota_app
from mcp_gateway.cli.upstreams import upstreams_app
from mcp_gateway.cli.vault import vault_app
from mcp_gateway.errors import GatewayError

app = typer.Typer(
    help="MCP Gateway: a governed MCP gateway.",
    no_args_is_help=True,
    add_completion=False,
    # Plain click help: typer's rich panels print a `<bool>` type after every flag (typer 0.29), and
    # its pretty tracebacks show local variables; `main` prints failures as one line instead.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
app.add_typer(upstreams_app, name="upstreams")
app.add_typer(agents_app, name="agents")
app.add_typer(approvals_app, name="approvals")
app.add_typer(admin_app, name="admin")
app.add_typer(vault_app, name="vault")
app.add_typer(audit_app, name="audit")
app.add_typer(policy_app, name="policy")
app.add_typer(demo_app, name="demo")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(quota_app, name="quota")
app.add_typer(incidents_app, name="incidents")
app.command("init")(init)

__all__ = ["app", "harden_process", "main", "parse_expiry", "parse_since"]


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"mcp-gateway {version('mcp-gateway')}")
        except PackageNotFoundError:
            typer.echo("mcp-gateway (version unknown: not installed as a package)")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="print the version and exit"),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="print the traceback of a failure (also MCP_GATEWAY_DEBUG=1)")
    ] = False,
) -> None:
    if debug:
        set_debug(True)


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[
        str | None, typer.Option(metavar="HOST", help="bind address (default: the config's, else 127.0.0.1)")
    ] = None,
    port: Annotated[
        int | None, typer.Option(metavar="PORT", help="port (default: the config's, else 8080)")
    ] = None,
) -> None:
    """Run the gateway until SIGINT/SIGTERM (the port is checked before anything starts)."""
    from mcp_gateway.app.runner import bind_listener, run_gateway

    settings = load_cli_settings(config)
    if host is not None or port is not None:
        server = settings.server.model_copy(
            update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
        )
        settings = settings.model_copy(update={"server": server})
    try:
        listener = bind_listener(settings.server.host, settings.server.port)
        run_gateway(settings, master_key_env=master_key_env(), listener=listener)
    except GatewayError as exc:
        raise fail(str(exc)) from None


@app.command()
def quickstart(
    directory: Annotated[Path, typer.Option("--dir", help="where to put the demo set-up")] = Path(
        ".mcp-gateway-quickstart"
    ),
    port: Annotated[int, typer.Option(help="port to serve on")] = 8080,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="set up and print, but do not start")] = False,
    postgres: Annotated[
        str | None,
        typer.Option(
            "--postgres",
            metavar="DSN",
            envvar="MCP_GATEWAY_DEMO_POSTGRES",
            show_envvar=True,
            help=(
                "also set up the self-healing loop (`demo heal`) on this PostgreSQL with dbt Core"
                " (a DSN with a password: pass it in the environment variable, not on the command line)"
            ),
        ),
    ] = None,
    postgres_schema: Annotated[
        str, typer.Option(metavar="NAME", help="the schema the loop's tables live in (reset on start)")
    ] = "mcp_gateway_demo",
    dbt: Annotated[
        Path | None,
        typer.Option(metavar="PATH", help="the dbt program (default: .venv-dbt/bin/dbt, else dbt on PATH)"),
    ] = None,
) -> None:
    """Set up a demo (key, agent, policy, upstream) and start the gateway on 127.0.0.1."""
    from mcp_gateway.demo.quickstart import prepare, run
    from mcp_gateway.demo.quickstart_pg import PrerequisiteMissing, connect_check, find_dbt

    try:
        # PostgreSQL and dbt are checked before anything in the folder changes.
        pg = connect_check(postgres, postgres_schema, find_dbt(dbt)) if postgres is not None else None
        demo = prepare(directory.resolve(), port=port, postgres=pg)
        typer.echo(demo.instructions)
        if not no_serve:
            run(demo)
    except PrerequisiteMissing as exc:
        raise fail(str(exc), code=2) from None
    except GatewayError as exc:
        raise fail(str(exc)) from None


def harden_process() -> None:
    """Keep key material out of core dumps: no core files, and (Linux) not dumpable or ptrace-able
    by other processes of the same user."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_dumpable = 4
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)


def main() -> None:
    """Console-script entry point."""
    from mcp_gateway.telemetry import configure_logging

    harden_process()
    try:
        configure_logging(os.environ.get("MCP_GATEWAY_LOG_LEVEL") or "INFO")
    except ValueError as exc:
        sys.stderr.write(f"error: MCP_GATEWAY_LOG_LEVEL {exc}\n")
        sys.exit(2)
    from mcp_gateway.cli.failures import run_cli

    set_debug(os.environ.get("MCP_GATEWAY_DEBUG", "").lower() in ("1", "true", "yes", "on"))
    sys.exit(run_cli(app, sys.argv[1:]))
