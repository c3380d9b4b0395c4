"""``mcp-gateway demo``: play the quickstart's agent (see ``demo.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer

from mcp_gateway.cli.common import fail
from mcp_gateway.errors import GatewayError

demo_app = typer.Typer(help="Play the quickstart's demo agent through the stories.", no_args_is_help=True)

DirOpt = Annotated[Path, typer.Option("--dir", metavar="DIR", help="the quickstart directory")]
DEFAULT_DIR = Path(".mcp-gateway-quickstart")


def _play(directory: Path, story: Callable[[Any], Awaitable[Any]]) -> None:
    from mcp_gateway.config import load_settings
    from mcp_gateway.demo.agent import Agent, session
    from mcp_gateway.demo.quickstart import TOKEN_FILE

    try:
        settings = load_settings(directory / "gateway.yaml")
        token = (directory / TOKEN_FILE).read_text(encoding="utf-8").strip()
    except (OSError, GatewayError) as exc:
        raise fail(
            f"no quickstart set-up in `{directory}`: run `mcp-gateway quickstart` first ({exc})"
        ) from None
    url = f"http://{settings.server.host}:{settings.server.port}/mcp"

    async def main() -> None:
        async with session(url, token) as client:
            await story(Agent(client, typer.echo))

    try:
        anyio.run(main)
    except Exception as exc:
        if not _unreachable(exc):
            raise
        raise fail(
            f"cannot reach the quickstart gateway at {url}: is `mcp-gateway quickstart` running?"
        ) from None


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or every exception an anyio task group wrapped in it) says "no server there"."""
    import asyncio

    import httpx2

    if isinstance(exc, BaseExceptionGroup):
        # Sibling tasks cancelled because of the failed connection say nothing of their own.
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        return bool(inner) and all(_unreachable(e) for e in inner)
    return isinstance(exc, OSError | httpx2.ConnectError | httpx2.ConnectTimeout)


@demo_app.command("fix-amount")
def fix_amount(directory: DirOpt = DEFAULT_DIR) -> None:
    """Story 2: branch, fix a fat-fingered amount, verify, switch in, roll back."""
    from mcp_gateway.demo.agent import fix_amount as story

    _play(directory, story)


@demo_app.command("checks")
def checks(directory: DirOpt = DEFAULT_DIR) -> None:
    """Stories 1 and 3: an empty forecast table, revenue mixing currencies."""
    from mcp_gateway.demo.agent import checks as story

    _play(directory, story)


@demo_app.command("rerun")
def rerun(directory: DirOpt = DEFAULT_DIR) -> None:
    """A failed dbt Cloud job: failure context, rerun of the failed step, status."""
    from mcp_gateway.demo.agent import rerun as story

    _play(directory, story)


@demo_app.command("patch")
def patch(
    directory: DirOpt = DEFAULT_DIR,
    approval_id: Annotated[
        str | None, typer.Option(metavar="APPROVAL_ID", help="run the patch this approval allows")
    ] = None,
) -> None:
    """A 10x Salesforce Amount change: parked for approval, then run once with `--approval-id`."""
    from mcp_gateway.demo.agent import patch as story

    _play(directory, lambda agent: story(agent, approval_id))


@demo_app.command("revert")
def revert(
    audit_id: Annotated[str, typer.Option(metavar="AUDIT_ID", help="the audit_id a patch returned")],
    directory: DirOpt = DEFAULT_DIR,
) -> None:
    """Undo a Salesforce patch from the before-image in its audit record."""
    from mcp_gateway.demo.agent import revert as story

    _play(directory, lambda agent: story(agent, audit_id))


AdminTokenOpt = Annotated[
    str | None,
    typer.Option("--admin-token", envvar="MCP_GATEWAY_ADMIN_TOKEN", hidden=True, show_envvar=False),
]


@demo_app.command("heal")
def heal(directory: DirOpt = DEFAULT_DIR, admin_token: AdminTokenOpt = None) -> None:
    """The self-healing loop (quickstart --postgres): a dbt build fails, the monitor's incident, the
    fix on a branch, dbt tests, your approval (played with $MCP_GATEWAY_ADMIN_TOKEN), switch-in, rerun."""
    from mcp_gateway.config import load_settings
    from mcp_gateway.demo.agent import session
    from mcp_gateway.demo.heal import admin_approver, loop_of
    from mcp_gateway.demo.heal import heal as story
    from mcp_gateway.demo.quickstart import TOKEN_FILE
    from mcp_gateway.demo.quickstart_pg import PrerequisiteMissing

    try:
        settings = load_settings(directory / "gateway.yaml")
        token = (directory / TOKEN_FILE).read_text(encoding="utf-8").strip()
    except (OSError, GatewayError) as exc:
        raise fail(
            f"no quickstart set-up in `{directory}`: run `mcp-gateway quickstart` first ({exc})"
        ) from None
    try:
        loop = loop_of(settings, directory)
    except PrerequisiteMissing as exc:
        raise fail(str(exc), code=2) from None
    if not admin_token:
        raise fail(
            "demo heal plays the human approver too: export MCP_GATEWAY_ADMIN_TOKEN=$(mcp-gateway admin"
            f" create you -c {directory / 'gateway.yaml'}) first",
            code=2,
        )
    base = f"http://{settings.server.host}:{settings.server.port}"
    approve = admin_approver(base, admin_token.strip(), note="demo heal: dbt tests passed on the branch")
    recovered = False

    async def main() -> None:
        nonlocal recovered
        async with session(f"{base}/mcp", token) as client:
            recovered = await story(client, typer.echo, loop, approve)

    try:
        anyio.run(main)
    except Exception as exc:
        if not _unreachable(exc):
            raise
        raise fail(
            f"cannot reach the quickstart gateway at {base}/mcp: is `mcp-gateway quickstart` running?"
        ) from None
    if not recovered:
        raise typer.Exit(1)
