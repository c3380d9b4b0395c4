"""``mcp-gateway approvals``: see and decide the requests waiting for a human."""

from __future__ import annotations

import getpass
import json
import time
from typing import TYPE_CHECKING, Annotated

import typer

from mcp_gateway.cli.common import ConfigOpt, fail, iso, load_cli_settings
from mcp_gateway.errors import GatewayError

if TYPE_CHECKING:
    from mcp_gateway.approvals.model import Approval
    from mcp_gateway.approvals.store import ApprovalStore
    from mcp_gateway.config import Settings

approvals_app = typer.Typer(help="List, show, approve and deny approval requests.", no_args_is_help=True)

AsOpt = Annotated[str | None, typer.Option("--as", help="the approver's name (default: the OS user)")]
NoteOpt = Annotated[str | None, typer.Option("--note", help="why; kept with the decision and audited")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _open(settings: Settings) -> ApprovalStore:
    from mcp_gateway.approvals.settings import ApprovalSettings
    from mcp_gateway.approvals.sql import open_approval_store

    # `approvals:` in gateway.yaml once the settings carry it; the defaults until then.
    section = getattr(settings, "approvals", None) or ApprovalSettings()
    return open_approval_store(section, settings.data_dir)


def _line(approval: Approval) -> str:
    return (
        f"{approval.id}\t{approval.status}\t{approval.agent}\t{approval.tool}"
        f"\tcreated {iso(approval.created_at)}\texpires {iso(approval.expires_at)}\t{approval.reason}"
    )


@approvals_app.command("list")
def approvals_list(
    config: ConfigOpt = None,
    status: Annotated[
        str | None, typer.Option(help="pending, approved, denied, used or expired (default: all)")
    ] = None,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """List approval requests, newest first."""
    store = _open(load_cli_settings(config))
    try:
        approvals = store.list(status, limit=limit)  # type: ignore[arg-type]  # the store validates it
    except GatewayError as exc:
        raise fail(str(exc)) from None
    finally:
        store.close()
    for approval in approvals:
        typer.echo(json.dumps(approval.to_dict(), sort_keys=True) if as_json else _line(approval))


@approvals_app.command("show")
def approvals_show(approval_id: str, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Show one request: who asked, for what, why, the arguments (redacted) and the decision."""
    store = _open(load_cli_settings(config))
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
    if approval.decided_by:
        typer.echo(f"decided by {approval.decided_by} at {iso(approval.decided_at)}: {approval.note or '-'}")
    if approval.used_at:
        typer.echo(f"used at {iso(approval.used_at)} by call {approval.used_call_id}")


def _decide(
    approval_id: str, *, approve: bool, config: ConfigOpt, approver: str | None, note: str | None
) -> None:
    from mcp_gateway.app.wiring import open_audit_sink
    from mcp_gateway.approvals.model import ApprovalError, decide_refusal, decision_event

    name = approver or getpass.getuser()
    settings = load_cli_settings(config)
    store = _open(settings)
    try:
        sink = open_audit_sink(settings)
        try:
            current = store.get(approval_id)

            def record(error: ApprovalError | None = None) -> None:
                sink.append(
                    [
                        decision_event(
                            approval_id,
                            current,
                            approve=approve,
                            approver=name,
                            note=note,
                            via="cli",
                            error=error,
                        )
                    ]
                )

            refusal = decide_refusal(current, approval_id, now=time.time())
            if refusal is not None:
                record(refusal)
                raise refusal
            record()  # audit before act: if this fails, nothing is decided
            try:
                decided = store.decide(approval_id, approve=approve, approver=name, note=note)
            except ApprovalError as exc:
                record(exc)
                raise
        finally:
            sink.close()
    except GatewayError as exc:
        raise fail(str(exc)) from None
    finally:
        store.close()
    verb = "approved" if approve else "denied"
    until = f"; usable once until {iso(decided.expires_at)}" if approve else ""
    typer.echo(f"{verb} {decided.id} ({decided.agent} → {decided.tool}) as {name}{until}")


@approvals_app.command("approve")
def approvals_approve(
    approval_id: str, config: ConfigOpt = None, approver: AsOpt = None, note: NoteOpt = None
) -> None:
    """Approve a pending request: the agent may then repeat that exact call once."""
    _decide(approval_id, approve=True, config=config, approver=approver, note=note)


@approvals_app.command("deny")
def approvals_deny(
    approval_id: str, config: ConfigOpt = None, approver: AsOpt = None, note: NoteOpt = None
) -> None:
    """Deny a pending request."""
    _decide(approval_id, approve=False, config=config, approver=approver, note=note)
