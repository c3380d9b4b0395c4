"""``mcp-gateway approvals``: see and decide the requests waiting for a human.

Deciding needs an admin token (``mcp-gateway admin create NAME``), read from ``$MCP_GATEWAY_ADMIN_TOKEN``
or stdin (a hidden prompt on a terminal), never from argv, and verified against the admin store the
gateway uses: the approver is the token's holder. ``--as NAME`` is refused (and audited).
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mcp_gateway.cli.common import ConfigOpt, fail, iso, load_cli_settings, master_key_env, read_settings
from mcp_gateway.errors import GatewayError

if TYPE_CHECKING:
    from mcp_gateway.approvals.model import Approval
    from mcp_gateway.approvals.store import ApprovalStore
    from mcp_gateway.config import Settings
    from mcp_gateway.types import AuditEvent

approvals_app = typer.Typer(help="List, show, approve and deny approval requests.", no_args_is_help=True)

TOKEN_ENV = "MCP_GATEWAY_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a secret
# Kept only to refuse it clearly (and audit the attempt): a declared name is not an identity.
AsOpt = Annotated[
    str | None, typer.Option("--as", hidden=True, help="refused: the admin token names the approver")
]
# The token comes from the environment (read by the CLI framework, here at the entry) or stdin; the
# option exists only so click reads the variable, and a value typed on the command line is refused.
TokenOpt = Annotated[
    str | None, typer.Option("--admin-token", envvar=TOKEN_ENV, hidden=True, show_envvar=False)
]
NoteOpt = Annotated[
    str | None, typer.Option("--note", metavar="TEXT", help="why; kept with the decision and audited")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON (times as Unix seconds)")]
IdArg = Annotated[str, typer.Argument(metavar="APPROVAL_ID", help="the id a pending call returned (apr_...)")]


def _open(settings: Settings) -> ApprovalStore:
    from mcp_gateway.approvals.settings import ApprovalSettings
    from mcp_gateway.approvals.sql import open_approval_store

    # `approvals:` in gateway.yaml once the settings carry it; the defaults until then.
    section = getattr(settings, "approvals", None) or ApprovalSettings()
    return open_approval_store(section, settings.data_dir)


def _line(approval: Approval) -> str:
    status: str = approval.status
    if status == "pending" and approval.min_approvers > 1:
        status += f" ({len(approval.approvers)}/{approval.min_approvers} approvers)"
    return (
        f"{approval.id}\t{status}\t{approval.agent}\t{approval.tool}"
        f"\tcreated {iso(approval.created_at)}\texpires {iso(approval.expires_at)}\t{approval.reason}"
    )


def _open_existing(config: Path | None) -> ApprovalStore:
    """The approval store for a command that only reads: never created where there is none."""
    settings = read_settings(config)
    approvals = settings.approvals
    if approvals.store == "sqlite":
        path = approvals.path if approvals.path.is_absolute() else settings.data_dir / approvals.path
        if not path.is_file():
            raise fail(f"no approval store at `{path}`: no approval was ever requested with this config")
    return _open(settings)


@approvals_app.command("list")
def approvals_list(
    config: ConfigOpt = None,
    status: Annotated[
        str | None,
        typer.Option(metavar="STATUS", help="pending, approved, denied, used or expired (default: all)"),
    ] = None,
    limit: Annotated[int, typer.Option(metavar="N", help="at most this many, newest first")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """List approval requests, newest first."""
    store = _open_existing(config)
    try:
        approvals = store.list(status, limit=limit)  # type: ignore[arg-type]  # the store validates it
    except GatewayError as exc:
        raise fail(str(exc)) from None
    finally:
        store.close()
    for approval in approvals:
        typer.echo(json.dumps(approval.to_dict(), sort_keys=True) if as_json else _line(approval))


@approvals_app.command("show")
def approvals_show(approval_id: IdArg, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Show one request: who asked, for what, why, the arguments (redacted) and the decision."""
    store = _open_existing(config)
    try:
        approval = store.get(approval_id)
    finally:
        store.close()
    if approval is None:
        raise fail(f"no approval `{approval_id}`")
    if as_json:
        typer.echo(json.dumps(approval.to_dict(), sort_keys=True, ensure_ascii=False, indent=2))
        return
    typer.echo(_line(approval))
    typer.echo(f"arguments: {json.dumps(dict(approval.args), sort_keys=True, ensure_ascii=False)}")
    if approval.detail:
        typer.echo(
            f"detail: {json.dumps(dict(approval.detail), sort_keys=True, ensure_ascii=False, default=str)}"
        )
    if approval.min_approvers > 1 or len(approval.approvers) > 1:
        names = ", ".join(approval.approver_names) or "-"
        typer.echo(f"approvals: {len(approval.approvers)} of {approval.min_approvers} ({names})")
    if approval.decided_by:
        typer.echo(f"decided by {approval.decided_by} at {iso(approval.decided_at)}: {approval.note or '-'}")
    if approval.used_at:
        typer.echo(f"used at {iso(approval.used_at)} by call {approval.used_call_id}")


def _read_token(given: str | None) -> str:
    """The admin token from ``$MCP_GATEWAY_ADMIN_TOKEN``, else stdin, else a hidden prompt (never argv)."""
    if given is not None:
        return given.strip()
    if sys.stdin.isatty():
        return getpass.getpass("admin token: ").strip()
    return sys.stdin.readline().strip()


def _auth_failure(reason: str, token: str, approval_id: str, approve: bool) -> AuditEvent:
    """The audit record of a decision attempted without a live admin token (the token never in it)."""
    from mcp_gateway.identity.admin_tokens import admin_token_id_of
    from mcp_gateway.identity.agents import token_id_of
    from mcp_gateway.types import AuditEvent

    detail: dict[str, Any] = {
        "reason": reason,
        "via": "cli",
        "approval_id": approval_id,
        "decision": "approve" if approve else "deny",
    }
    if (token_id := admin_token_id_of(token)) is not None:
        detail["token_kind"], detail["token_id"] = "admin", token_id
    elif (token_id := token_id_of(token)) is not None:
        detail["token_kind"], detail["token_id"] = "agent", token_id
    return AuditEvent(kind="admin_auth_failure", decision="deny", status="unauthenticated", detail=detail)


def _decide(
    ctx: typer.Context,
    approval_id: str,
    *,
    approve: bool,
    config: ConfigOpt,
    declared: str | None,
    note: str | None,
    token: str | None,
) -> None:
    from mcp_gateway.app.wiring import open_admins, open_audit_writer
    from mcp_gateway.approvals.decide import Approver, decide
    from mcp_gateway.errors import AuthError

    settings = load_cli_settings(config)
    store = _open(settings)
    admins = open_admins(settings)
    try:
        # Sealed with the vault's seal key when the vault opens, as the gateway's own records are.
        sink = open_audit_writer(settings, master_key_env=master_key_env())
        try:

            def record(event: AuditEvent) -> None:
                sink.append([event])

            raw = ""
            try:
                source = ctx.get_parameter_source("token")
                if source is not None and source.name == "COMMANDLINE":
                    # Refused even if valid: argv shows in `ps` and shell history. Audited (id only).
                    raw = (token or "").strip()
                    raise AuthError("admin token given on the command line")
                raw = _read_token(token)
                if not raw:
                    raise AuthError("missing admin token")
                admin = admins.verify(raw)
            except AuthError as exc:
                record(_auth_failure(str(exc), raw, approval_id, approve))
                raise fail(
                    f"unauthenticated: {exc} (set {TOKEN_ENV} to an admin token from"
                    " `mcp-gateway admin create NAME`, or pipe it on stdin)"
                ) from None
            decided = decide(
                store,
                approval_id,
                approver=Approver(admin.name, admin.token_id),
                approve=approve,
                note=note,
                via="cli",
                record=record,
                declared_name=declared,
            )
        finally:
            sink.close()
    except GatewayError as exc:
        raise fail(str(exc)) from None
    finally:
        admins.close()
        store.close()
    name = admin.name
    if approve and decided.status == "pending":
        typer.echo(
            f"approved {decided.id} ({decided.agent} → {decided.tool}) as {name}:"
            f" {len(decided.approvers)} of {decided.min_approvers} distinct approvers so far;"
            " it stays pending until the rest approve"
        )
        return
    verb = "approved" if approve else "denied"
    until = f"; usable once until {iso(decided.expires_at)}" if approve else ""
    typer.echo(f"{verb} {decided.id} ({decided.agent} → {decided.tool}) as {name}{until}")


@approvals_app.command("approve")
def approvals_approve(
    ctx: typer.Context,
    approval_id: IdArg,
    config: ConfigOpt = None,
    declared: AsOpt = None,
    note: NoteOpt = None,
    token: TokenOpt = None,
) -> None:
    """Approve a pending request as the holder of the admin token in $MCP_GATEWAY_ADMIN_TOKEN (or on
    stdin). Under the two-person rule it runs only once enough distinct admins have approved; the
    agent may then repeat that exact call once."""
    _decide(ctx, approval_id, approve=True, config=config, declared=declared, note=note, token=token)


@approvals_app.command("deny")
def approvals_deny(
    ctx: typer.Context,
    approval_id: IdArg,
    config: ConfigOpt = None,
    declared: AsOpt = None,
    note: NoteOpt = None,
    token: TokenOpt = None,
) -> None:
    """Deny a pending request as the holder of the admin token in $MCP_GATEWAY_ADMIN_TOKEN (or on stdin)."""
    _decide(ctx, approval_id, approve=False, config=config, declared=declared, note=note, token=token)
