"""``mcp-gateway quota``: see and reset quota usage (admin, audited).

``show`` only reads: it opens the SQLite store read-only (and fails, creating nothing, where there is
none) or reads Redis with SCAN. ``reset`` is an admin act, audited through the CLI's one audit path
(``recorded.py``): a ``quota_reset`` record (``status: requested``) naming the quotas is durable
before any count is forgotten, and a second record says how it ended. An unreachable store refuses
the reset before anything is recorded or changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import time
from typing import TYPE_CHECKING, Annotated

import typer

from mcp_gateway.cli.common import ConfigOpt, JsonOpt, fail, iso, load_cli_settings, read_settings
from mcp_gateway.errors import GatewayError

if TYPE_CHECKING:
    from mcp_gateway.config import Settings
    from mcp_gateway.quotas.model import QuotaUsage

quota_app = typer.Typer(help="See and reset quota usage.", no_args_is_help=True)

AgentOpt = Annotated[str | None, typer.Option("--agent", metavar="AGENT", help="only this agent's quotas")]


def _usage(settings: Settings) -> list[QuotaUsage]:
    """Every quota in use now, read without creating or changing the store."""
    from mcp_gateway.quotas.store import open_quota_admin

    try:
        store = open_quota_admin(settings.quotas, settings.data_dir, read_only=True)
        try:
            return store.usage(time.time())
        finally:
            store.close()
    except GatewayError as exc:
        raise fail(str(exc)) from None


def _line(usage: QuotaUsage) -> str:
    state = f"full until {iso(usage.room_at)}" if usage.room_at is not None else "room"
    return (
        f"{usage.agent}\t{usage.subject}\t{usage.limit}\tused {usage.used}/{usage.amount}"
        f"\t{state}\tclear {iso(usage.clear_at)}"
    )


@quota_app.command("show")
def quota_show(config: ConfigOpt = None, agent: AgentOpt = None, as_json: JsonOpt = False) -> None:
    """Show each quota in use: agent, tool ("(all tools)" for an agent-wide quota), limit, calls
    used in the window ending now, and when it has room again (UTC)."""
    settings = read_settings(config)
    found = [usage for usage in _usage(settings) if agent is None or usage.agent == agent]
    if not found:
        who = f"agent `{agent}`" if agent is not None else "any agent"
        typer.echo(f"no quota in use by {who}", err=True)
    for usage in found:
        typer.echo(json.dumps(dataclasses.asdict(usage), sort_keys=True) if as_json else _line(usage))


def _grant_selector(settings: Settings, agent: str, grant_id: str) -> tuple[str, frozenset[str]]:
    """The tool pattern and quota texts of policy grant ``grant_id`` of ``agent``.

    Raises:
        typer.Exit: the policy does not load, has no such grant, the grant is another agent's or it
            sets no quota.
    """
    from mcp_gateway.policy.load import load_policy

    try:
        policy = load_policy(settings.policies)
    except GatewayError as exc:
        raise fail(f"cannot load the policy to find grant `{grant_id}`: {exc}") from None
    grant = policy.grant(grant_id)
    if grant is None:
        raise fail(f"no grant `{grant_id}` in the policy at `{settings.policies}`")
    if grant.agent != agent:
        raise fail(f"grant `{grant_id}` is agent `{grant.agent}`'s, not `{agent}`'s")
    limits = frozenset(text for text, _, _ in grant.governance.rates)
    if not limits:
        raise fail(f"grant `{grant_id}` sets no quota")
    return grant.tool, limits


def _selected(usage: QuotaUsage, agent: str, grant: tuple[str, frozenset[str]] | None) -> bool:
    from mcp_gateway.quotas.model import ALL_TOOLS

    if usage.agent != agent:
        return False
    if grant is None:
        return True
    pattern, limits = grant
    return usage.tool != ALL_TOOLS and usage.limit in limits and fnmatch.fnmatchcase(usage.tool, pattern)


@quota_app.command("reset")
def quota_reset(
    agent: Annotated[str, typer.Argument(metavar="AGENT", help="the agent whose counted calls to forget")],
    config: ConfigOpt = None,
    grant_id: Annotated[
        str | None,
        typer.Option(
            "--grant", metavar="ID", help="only the quotas of this policy grant (default: all of AGENT's)"
        ),
    ] = None,
) -> None:
    """Forget the calls counted against AGENT's quotas (audited), so it may call again at once."""
    from mcp_gateway.cli.recorded import audit_recorder
    from mcp_gateway.quotas.store import open_quota_admin

    settings = load_cli_settings(config)
    grant = _grant_selector(settings, agent, grant_id) if grant_id is not None else None
    chosen = [usage for usage in _usage(settings) if _selected(usage, agent, grant)]
    if not chosen:
        scope = f" under grant `{grant_id}`" if grant_id is not None else ""
        raise fail(f"agent `{agent}` has no quota in use{scope}: nothing to reset")
    quotas = [{"tool": u.tool, "limit": u.limit, "used": u.used} for u in chosen]
    record = audit_recorder(settings, "quota_reset", agent=agent, grant=grant_id)
    try:
        record("requested", quotas=quotas)
    except GatewayError as exc:
        raise fail(str(exc)) from None
    try:
        store = open_quota_admin(settings.quotas, settings.data_dir)
        try:
            count = store.reset([usage.key for usage in chosen])
        finally:
            store.close()
    except GatewayError as exc:
        with contextlib.suppress(GatewayError):
            record("error", error=str(exc))
        raise fail(str(exc)) from None
    try:
        record("ok", reset=count)
    except GatewayError as exc:
        raise fail(f"reset {count} quota(s) of `{agent}`, but the audit record failed: {exc}") from None
    typer.echo(f"reset {count} quota(s) of agent `{agent}`")
