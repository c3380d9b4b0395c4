"""Attacks on human approval: a forged, absent or command-line admin token, a self-declared approver, an
agent approving its own call, one admin counted twice. Each is refused, decides nothing, and is audited
under the authenticated approver (or as an authentication failure naming only the token's public id);
the two-person rule holds through the real gateway (uvicorn + the official MCP SDK client)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from typer.testing import CliRunner

from conftest import GatewayFactory, connect
from mcp_gateway.approvals.model import Approval, args_hash
from mcp_gateway.approvals.sql import SQLiteApprovalStore
from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.cli import app
from mcp_gateway.http.admin import create_admin_routes
from mcp_gateway.identity.admin_tokens import SQLiteAdminStore
from mcp_gateway.tools.base import BuiltinTool, ToolContext, ToolInput, Toolset
from mcp_gateway.types import AuditRecord

runner = CliRunner()


def _forged(token: str) -> str:
    """The right shape and a real id, a made-up secret."""
    return token[:17] + ("A" if token[17] != "A" else "B") + token[18:]


def _secret(token: str) -> str:
    return token[17:]


# --- the admin API, in process -------------------------------------------------------------------------


@dataclass
class Api:
    client: httpx.AsyncClient
    approvals: SQLiteApprovalStore
    admins: SQLiteAdminStore
    sink: SQLiteAuditSink

    def request(self, min_approvers: int = 2) -> Approval:
        return self.approvals.create(
            agent="ops-agent",
            tool="ops.rerun_job",
            args_hash=args_hash({"job": "etl"}),
            args={"job": "etl"},
            reason="reruns need two humans",
            detail={},
            ttl_seconds=600,
            min_approvers=min_approvers,
        )

    def token(self, name: str) -> str:
        return self.admins.create(name)[1]

    async def approve(self, approval_id: str, token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return await self.client.post(f"/admin/approvals/{approval_id}/approve", headers=headers)

    def status(self, approval_id: str) -> tuple[str, tuple[str, ...]]:
        current = self.approvals.get(approval_id)
        assert current is not None
        return current.status, current.approver_names


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    approvals = SQLiteApprovalStore(tmp_path / "approvals.db")
    admins = SQLiteAdminStore(tmp_path / "admins.db")
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    async with AuditLog(sink) as log:
        routes = create_admin_routes(approvals, log, admins.verify)
        transport = httpx.ASGITransport(app=Starlette(routes=routes), client=("203.0.113.9", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield Api(client, approvals, admins, sink)
    for store in (approvals, admins, sink):
        store.close()


@pytest.mark.anyio
@pytest.mark.parametrize("which", ["absent", "forged", "revoked", "agent-shaped"])
async def test_an_api_decision_without_a_live_admin_token_decides_nothing_and_is_audited(
    api: Api, which: str
) -> None:
    approval = api.request(min_approvers=1)
    real = api.token("alice")
    if which == "revoked":
        api.admins.revoke("alice")
    token = {
        "absent": None,
        "forged": _forged(real),
        "revoked": real,
        "agent-shaped": "mgw_abcdefabcdef_" + "x" * 43,
    }[which]
    response = await api.approve(approval.id, token)
    assert response.status_code == 401
    assert api.status(approval.id) == ("pending", ())
    (record,) = api.sink.records()
    assert (record.kind, record.status) == ("admin_auth_failure", "unauthenticated")
    assert (record.detail["approval_id"], record.detail["decision"]) == (approval.id, "approve")
    assert _secret(real) not in json.dumps(dict(record.detail))


@pytest.mark.anyio
async def test_an_admin_token_minted_in_the_agents_own_name_cannot_approve_the_agents_call(api: Api) -> None:
    approval = api.request(min_approvers=1)
    token = api.token("OPS-Agent")  # the requesting agent's name in other case: still the requester
    response = await api.approve(approval.id, token)
    assert response.status_code == 409 and response.json()["error"] == "approval_self_approval"
    assert api.status(approval.id) == ("pending", ())
    (record,) = api.sink.records()
    assert (record.kind, record.status, record.detail["error_kind"]) == (
        "approval",
        "error",
        "approval_self_approval",
    )
    assert (record.detail["approver"], record.detail["admin_token_id"]) == ("OPS-Agent", token[4:16])


@pytest.mark.anyio
async def test_one_admin_with_two_tokens_counts_once_toward_two_approvers(api: Api) -> None:
    approval = api.request(min_approvers=2)
    first, second = api.token("alice"), api.token("alice")
    ok = await api.approve(approval.id, first)
    assert ok.status_code == 200 and ok.json()["status"] == "pending"
    again = await api.approve(approval.id, second)
    assert again.status_code == 409 and again.json()["error"] == "approval_same_approver"
    assert api.status(approval.id) == ("pending", ("alice",))
    done = await api.approve(approval.id, api.token("bob"))
    assert done.status_code == 200 and done.json()["status"] == "approved"
    records = [r for r in api.sink.records() if r.kind == "approval"]
    assert [(r.detail["approver"], r.status, r.detail.get("error_kind")) for r in records] == [
        ("alice", "ok", None),
        ("alice", "error", "approval_same_approver"),
        ("bob", "ok", None),
    ]


@pytest.mark.anyio
async def test_a_body_naming_another_approver_is_refused_and_audited_under_the_token_holder(api: Api) -> None:
    approval = api.request(min_approvers=1)
    token = api.token("mallory")
    response = await api.client.post(
        f"/admin/approvals/{approval.id}/approve",
        headers={"Authorization": f"Bearer {token}"},
        json={"approver": "ceo", "note": "trust me"},
    )
    assert response.status_code == 400 and response.json()["error"] == "bad_request"
    assert api.status(approval.id) == ("pending", ())
    (record,) = api.sink.records()
    assert (record.kind, record.status, record.detail["error_kind"]) == (
        "approval",
        "error",
        "approval_bad_request",
    )
    assert (record.detail["approver"], record.detail["approval_id"]) == ("mallory", approval.id)


# --- the CLI ---------------------------------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text("version: 1\n")
    path = tmp_path / "gateway.yaml"
    path.write_text("data_dir: data\npolicies: policies\napprovals:\n  min_approvers: 2\n")
    return path


def _cli(
    config: Path, verb: str, approval_id: str, *extra: str, env_token: str | None = None, stdin: str = ""
) -> tuple[int, str]:
    env = {"MCP_GATEWAY_ADMIN_TOKEN": env_token} if env_token is not None else None
    result = runner.invoke(
        app, ["approvals", verb, approval_id, "-c", str(config), *extra], env=env, input=stdin
    )
    return result.exit_code, result.stdout + result.stderr


def _store(config: Path) -> SQLiteApprovalStore:
    return SQLiteApprovalStore(config.parent / "data" / "approvals.db")


def _cli_request(config: Path) -> Approval:
    store = _store(config)
    try:
        return store.create(
            agent="ops-agent",
            tool="ops.rerun_job",
            args_hash=args_hash({"job": "etl"}),
            args={"job": "etl"},
            reason="r",
            detail={},
            ttl_seconds=600,
        )
    finally:
        store.close()


def _cli_token(config: Path, name: str) -> str:
    admins = SQLiteAdminStore(config.parent / "data" / "admins.db")
    try:
        return admins.create(name)[1]
    finally:
        admins.close()


def _cli_audit(config: Path) -> list[AuditRecord]:
    sink = SQLiteAuditSink(config.parent / "data" / "audit.db")
    try:
        return sink.records()
    finally:
        sink.close()


def _state(config: Path, approval_id: str) -> tuple[str, tuple[str, ...]]:
    store = _store(config)
    try:
        current = store.get(approval_id)
        assert current is not None
        return current.status, current.approver_names
    finally:
        store.close()


@pytest.mark.parametrize("how", ["missing", "forged", "on the command line"])
def test_a_cli_decision_without_a_proper_admin_token_decides_nothing_and_is_audited_without_the_secret(
    config: Path, how: str
) -> None:
    approval = _cli_request(config)
    token = _cli_token(config, "alice")
    if how == "missing":
        code, out = _cli(config, "approve", approval.id)
        reason = "missing admin token"
    elif how == "forged":
        code, out = _cli(config, "approve", approval.id, env_token=_forged(token))
        reason = "unknown token"
    else:
        code, out = _cli(config, "approve", approval.id, "--admin-token", token)
        reason = "admin token given on the command line"
    assert code == 1 and "unauthenticated" in out and _secret(token) not in out
    assert _state(config, approval.id) == ("pending", ())
    (record,) = _cli_audit(config)
    assert (record.kind, record.status, record.detail["reason"]) == (
        "admin_auth_failure",
        "unauthenticated",
        reason,
    )
    assert (record.detail["approval_id"], record.detail["via"]) == (approval.id, "cli")
    assert _secret(token) not in json.dumps(dict(record.detail))


def test_a_self_declared_approver_is_refused_and_audited_under_the_token_holder(config: Path) -> None:
    approval = _cli_request(config)
    code, out = _cli(config, "approve", approval.id, "--as", "ceo", env_token=_cli_token(config, "mallory"))
    assert code == 1 and "`--as ceo` is refused" in out
    assert _state(config, approval.id) == ("pending", ())
    (record,) = _cli_audit(config)
    assert (record.detail["approver"], record.detail["error_kind"]) == ("mallory", "approver_self_declared")


def test_the_cli_enforces_the_gateway_wide_two_person_rule_and_refuses_self_approval(config: Path) -> None:
    approval = _cli_request(config)
    assert approval.min_approvers == 1  # made by a store opened without the setting
    store = SQLiteApprovalStore(config.parent / "data" / "approvals.db", min_approvers=2)
    approval = store.create(
        agent="ops-agent",
        tool="ops.rerun_job",
        args_hash="h",
        args={},
        reason="r",
        detail={},
        ttl_seconds=600,
    )
    store.close()
    code, out = _cli(config, "approve", approval.id, stdin=_cli_token(config, "ops-agent") + "\n")
    assert code == 1 and "never approves its own call" in out
    alice = _cli_token(config, "alice")
    code, out = _cli(config, "approve", approval.id, env_token=alice)
    assert code == 0 and "1 of 2 distinct approvers so far" in out
    code, out = _cli(config, "approve", approval.id, env_token=alice)
    assert code == 1 and "counts once" in out
    assert _state(config, approval.id) == ("pending", ("alice",))
    code, out = _cli(config, "approve", approval.id, env_token=_cli_token(config, "bob"))
    assert code == 0 and "usable once until" in out
    assert _state(config, approval.id) == ("approved", ("alice", "bob"))
    decisions = [(r.detail["approver"], r.status) for r in _cli_audit(config) if r.kind == "approval"]
    assert decisions == [("ops-agent", "error"), ("alice", "ok"), ("alice", "error"), ("bob", "ok")]


# --- through the real gateway ----------------------------------------------------------------------------

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
async def test_the_two_person_rule_holds_through_the_real_gateway(make_gateway: GatewayFactory) -> None:
    WRITES.clear()
    policy = (
        "version: 1\nagents:\n  agent-a:\n    grants:\n"
        "      - {tool: note.write, approval: {required: true, min_approvers: 2}}\n"
    )
    gw = make_gateway(policy, upstreams={}, toolsets=[_note_toolset()], watch_policy=False)
    admins = SQLiteAdminStore(gw.settings.data_dir / "admins.db")
    alice, bob, own = (admins.create(name)[1] for name in ("alice", "bob", "agent-a"))
    admins.close()

    async def approve(http: httpx.AsyncClient, approval_id: str, token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await http.post(f"{gw.base}/admin/approvals/{approval_id}/approve", headers=headers)

    async with connect(gw.url, gw.tokens["agent-a"]) as agent, httpx.AsyncClient(timeout=10) as http:
        parked = await agent.call_tool("note.write", {"text": "hello"})
        approval_id = parked.structured_content["approval_id"]  # type: ignore[index]
        again = {"text": "hello", "approval_id": approval_id}
        assert (await approve(http, approval_id, None)).status_code == 401
        assert (await approve(http, approval_id, _forged(alice))).status_code == 401
        assert (await approve(http, approval_id, gw.tokens["agent-a"])).status_code == 401
        assert (await approve(http, approval_id, own)).json()["error"] == "approval_self_approval"
        first = await approve(http, approval_id, alice)
        assert first.status_code == 200 and first.json()["status"] == "pending"
        assert (await approve(http, approval_id, alice)).json()["error"] == "approval_same_approver"
        early = await agent.call_tool("note.write", again)
        assert early.is_error and "1 of 2 distinct approvers" in str(early.content) and WRITES == []
        second = await approve(http, approval_id, bob)
        assert second.status_code == 200 and second.json()["status"] == "approved"
        done = await agent.call_tool("note.write", again)
        replay = await agent.call_tool("note.write", again)
    assert not done.is_error and replay.is_error and WRITES == ["hello"]
    records = gw.audit()
    failures = [r for r in records if r.kind == "admin_auth_failure"]
    assert len(failures) == 3 and {r.detail["approval_id"] for r in failures} == {approval_id}
    decisions = [
        (r.detail["approver"], r.status, r.detail.get("error_kind")) for r in records if r.kind == "approval"
    ]
    assert decisions == [
        ("agent-a", "error", "approval_self_approval"),
        ("alice", "ok", None),
        ("alice", "error", "approval_same_approver"),
        ("bob", "ok", None),
    ]
    text = json.dumps([dict(r.detail) for r in records])
    for token in (alice, bob, own, gw.tokens["agent-a"]):
        assert _secret(token) not in text
