"""``mcp-gateway approvals`` and ``mcp-gateway admin``, run in-process with typer's runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import GatewayFactory, connect
from mcp_gateway.approvals.model import Approval, args_hash
from mcp_gateway.approvals.sql import SQLiteApprovalStore
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.cli import app
from mcp_gateway.identity.admin_tokens import SQLiteAdminStore
from mcp_gateway.tools.base import BuiltinTool, ToolContext, ToolInput, Toolset

runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text("version: 1\n")
    path = tmp_path / "gateway.yaml"
    path.write_text("data_dir: data\npolicies: policies\n")
    return path


def _run(*args: str, token: str | None = None, stdin: str | None = None) -> tuple[int, str, str]:
    env = {"MCP_GATEWAY_ADMIN_TOKEN": token} if token is not None else None
    result = runner.invoke(app, list(args), env=env, input=stdin)
    return result.exit_code, result.stdout, result.stderr


def admin_token(config: Path, name: str) -> str:
    """A live admin token for ``name`` in the admin store of the gateway ``config`` points at."""
    store = SQLiteAdminStore(config.parent / "data" / "admins.db")
    try:
        return store.create(name)[1]
    finally:
        store.close()


def _request(config: Path, tool: str = "ops.rerun_job") -> Approval:
    store = SQLiteApprovalStore(config.parent / "data" / "approvals.db")
    try:
        return store.create(
            agent="ops-agent",
            tool=tool,
            args_hash=args_hash({"job": "etl"}),
            args={"job": "etl", "password": "[redacted]"},
            reason="reruns need a human",
            detail={"before": {"state": "failed"}},
            ttl_seconds=600,
        )
    finally:
        store.close()


def _audit(config: Path) -> list[dict[str, object]]:
    sink = SQLiteAuditSink(config.parent / "data" / "audit.db")
    try:
        return [
            {**r.detail, "kind": r.kind, "status": r.status, "verdict": r.decision} for r in sink.records()
        ]
    finally:
        sink.close()


def test_approvals_list_and_show_print_what_the_approver_needs(config: Path) -> None:
    approval = _request(config)
    code, out, _ = _run("approvals", "list", "-c", str(config), "--status", "pending")
    assert code == 0 and approval.id in out and "pending" in out and "ops.rerun_job" in out
    code, out, _ = _run("approvals", "show", approval.id, "-c", str(config))
    assert code == 0 and '"job": "etl"' in out and "reruns need a human" in out and '"state": "failed"' in out
    code, out, _ = _run("approvals", "show", approval.id, "-c", str(config), "--json")
    assert code == 0 and json.loads(out)["id"] == approval.id
    code, out, _ = _run("approvals", "list", "-c", str(config), "--status", "used")
    assert code == 0 and out == ""
    code, _, err = _run("approvals", "list", "-c", str(config), "--status", "bogus")
    assert code == 1 and "unknown approval status `bogus`" in err
    code, _, err = _run("approvals", "show", "apr_nope", "-c", str(config))
    assert code == 1 and "no approval `apr_nope`" in err


def test_approve_records_the_admin_token_holder_as_approver_and_is_audited(config: Path) -> None:
    approval = _request(config)
    token = admin_token(config, "alice")
    code, out, _ = _run("approvals", "approve", approval.id, "-c", str(config), "--note", "ok", token=token)
    assert code == 0 and f"approved {approval.id}" in out and "as alice" in out
    code, out, _ = _run("approvals", "show", approval.id, "-c", str(config), "--json")
    shown = json.loads(out)
    assert (shown["status"], shown["decided_by"], shown["note"]) == ("approved", "alice", "ok")
    (record,) = _audit(config)
    assert record["kind"] == "approval" and record["status"] == "ok" and record["verdict"] == "allow"
    assert (record["approval_id"], record["approver"], record["via"]) == (approval.id, "alice", "cli")
    assert record["admin_token_id"] == token[4:16] and token[17:] not in json.dumps(record)


def test_no_decision_is_made_when_the_audit_store_cannot_be_written(config: Path) -> None:
    approval = _request(config)
    (config.parent / "data" / "audit.db").mkdir()  # not a database: the audit store cannot open
    code, _, err = _run(
        "approvals", "approve", approval.id, "-c", str(config), token=admin_token(config, "alice")
    )
    assert code == 1 and "audit store" in err
    store = SQLiteApprovalStore(config.parent / "data" / "approvals.db")
    assert store.get(approval.id).status == "pending"  # type: ignore[union-attr]
    store.close()


def test_a_deny_read_from_stdin_is_final_and_a_second_decision_fails_and_is_audited(config: Path) -> None:
    approval = _request(config)
    bob = admin_token(config, "oncall-bob")
    code, out, _ = _run("approvals", "deny", approval.id, "-c", str(config), stdin=bob + "\n")
    assert code == 0 and f"denied {approval.id}" in out and "as oncall-bob" in out
    code, _, err = _run(
        "approvals", "approve", approval.id, "-c", str(config), token=admin_token(config, "mallory")
    )
    assert code == 1 and "already denied" in err
    first, second = _audit(config)
    assert (first["decision"], first["status"], first["approver"]) == ("deny", "ok", "oncall-bob")
    assert (second["status"], second["error_kind"], second["approver"]) == (
        "error",
        "approval_not_pending",
        "mallory",
    )
    code, _, err = _run("approvals", "approve", "apr_nope", "-c", str(config), token=bob)
    assert code == 1 and "no approval `apr_nope`" in err


def test_admin_tokens_are_printed_once_stored_hashed_listed_and_revoked(config: Path) -> None:
    code, out, err = _run("admin", "create", "alice", "-c", str(config), "--expires", "30d")
    assert code == 0 and "admin alice" in err
    token = out.strip()
    assert token.startswith("mga_")
    db = (config.parent / "data" / "admins.db").read_bytes()
    assert token.encode() not in db and token[17:].encode() not in db
    code, out, _ = _run("admin", "list", "-c", str(config))
    assert code == 0 and "alice" in out and "live" in out and token not in out
    store = SQLiteAdminStore(config.parent / "data" / "admins.db")
    assert store.verify(token).name == "alice"
    code, out, _ = _run("admin", "revoke", "alice", "-c", str(config))
    assert code == 0 and "revoked 1" in out
    assert "revoked" in _run("admin", "list", "-c", str(config))[1]
    code, _, err = _run("admin", "revoke", "alice", "-c", str(config))
    assert code == 1 and "no live admin token" in err
    code, _, err = _run("admin", "create", "bad name!", "-c", str(config))
    assert code == 1 and "admin name `bad name!`" in err
    store.close()


WRITES: list[str] = []


class NoteInput(ToolInput):
    text: str


async def _write(ctx: ToolContext, args: NoteInput) -> dict[str, Any]:
    WRITES.append(args.text)
    return {"written": args.text}


def _note_toolset() -> Toolset:
    tool = BuiltinTool("note.write", "write a note", NoteInput, _write)
    return Toolset("note", {tool.name: tool})


@pytest.mark.e2e
@pytest.mark.anyio
async def test_the_cli_decides_what_a_running_gateway_parked_and_the_agent_then_runs_it_once(
    make_gateway: GatewayFactory,
) -> None:
    WRITES.clear()
    policy = "version: 1\nagents:\n  agent-a:\n    grants:\n      - {tool: note.write, approval: required}\n"
    gw = make_gateway(policy, upstreams={}, toolsets=[_note_toolset()], watch_policy=False)
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        parked = await client.call_tool("note.write", {"text": "hello"})
        approval_id = parked.structured_content["approval_id"]  # type: ignore[index]
        code, out, _ = _run("approvals", "list", "-c", str(gw.config_path), "--status", "pending")
        assert code == 0 and approval_id in out and "note.write" in out and WRITES == []
        token = admin_token(gw.config_path, "alice")
        code, out, _ = _run("approvals", "approve", approval_id, "-c", str(gw.config_path), token=token)
        assert code == 0 and f"approved {approval_id}" in out
        done = await client.call_tool("note.write", {"text": "hello", "approval_id": approval_id})
        replay = await client.call_tool("note.write", {"text": "hello", "approval_id": approval_id})
    assert not done.is_error and replay.is_error and WRITES == ["hello"]
    code, out, _ = _run("approvals", "show", approval_id, "-c", str(gw.config_path), "--json")
    assert json.loads(out)["status"] == "used" and json.loads(out)["decided_by"] == "alice"
    decisions = [r for r in gw.audit() if r.kind == "approval"]
    assert [(r.detail["approver"], r.detail["via"], r.status) for r in decisions] == [("alice", "cli", "ok")]
