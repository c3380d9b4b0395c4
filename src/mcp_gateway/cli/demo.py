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
