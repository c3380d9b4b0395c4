"""The admin API: admin tokens only, every decision and every refused attempt audited, audit before act."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from conftest import GatewayFactory
from mcp_gateway.approvals.model import Approval, args_hash
from mcp_gateway.approvals.sql import SQLiteApprovalStore
from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.errors import AuditWriteError
from mcp_gateway.http.admin import create_admin_routes
from mcp_gateway.identity.admin_tokens import SQLiteAdminStore
from mcp_gateway.identity.agents import SQLiteAgentStore
from mcp_gateway.types import AuditEvent, AuditRecord


class FailingSink(SQLiteAuditSink):
    """An audit store whose disk is full: nothing can be made durable."""

    def append(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        raise AuditWriteError("disk full", reason="the audit store cannot write")


@dataclass
class Admin:
    client: httpx.AsyncClient
    approvals: SQLiteApprovalStore
    admins: SQLiteAdminStore
    sink: SQLiteAuditSink
    token: str
    agent_token: str

    def request(self, **overrides: Any) -> Approval:
        fields: dict[str, Any] = {
            "agent": "ops-agent",
            "tool": "ops.rerun_job",
            "args_hash": args_hash({"job": "etl"}),
            "args": {"job": "etl"},
            "reason": "reruns need a human",
            "detail": {},
            "ttl_seconds": 600,
        }
        return self.approvals.create(**{**fields, **overrides})

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token if token is not None else self.token}"}

    def audit_text(self) -> str:
        return json.dumps([[r.kind, dict(r.args), dict(r.detail)] for r in self.sink.records()])


async def _admin(tmp_path: Path, *, failing_audit: bool = False) -> AsyncIterator[Admin]:
    approvals = SQLiteApprovalStore(tmp_path / "approvals.db")
    admins = SQLiteAdminStore(tmp_path / "admins.db")
    sink = (FailingSink if failing_audit else SQLiteAuditSink)(tmp_path / "audit.db")
    agents = SQLiteAgentStore(tmp_path / "agents.db")
    _, token = admins.create("alice")
    _, agent_token = agents.create("ops-agent")
    async with AuditLog(sink) as log:
        app = Starlette(routes=create_admin_routes(approvals, log, admins.verify))
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield Admin(client, approvals, admins, sink, token, agent_token)
    for store in (approvals, admins, sink, agents):
        store.close()


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    async for value in _admin(tmp_path):
        yield value


@pytest.mark.anyio
async def test_an_admin_lists_shows_and_approves_and_the_decision_is_audited(admin: Admin) -> None:
    approval = admin.request()
    listed = await admin.client.get("/admin/approvals?status=pending", headers=admin.auth())
    assert listed.status_code == 200 and [a["id"] for a in listed.json()["approvals"]] == [approval.id]
    shown = await admin.client.get(f"/admin/approvals/{approval.id}", headers=admin.auth())
    assert shown.json()["reason"] == "reruns need a human" and shown.json()["args"] == {"job": "etl"}
    decided = await admin.client.post(
        f"/admin/approvals/{approval.id}/approve", headers=admin.auth(), json={"note": "fine"}
    )
    assert decided.status_code == 200
    assert (decided.json()["status"], decided.json()["decided_by"], decided.json()["note"]) == (
        "approved",
        "alice",
        "fine",
    )
    (record,) = admin.sink.records()
    assert (record.kind, record.agent, record.tool, record.decision, record.status) == (
        "approval",
        "ops-agent",
        "ops.rerun_job",
        "allow",
        "ok",
    )
    assert record.detail["approval_id"] == approval.id and record.detail["approver"] == "alice"
    assert record.detail["decision"] == "approve" and record.detail["via"] == "api"
    admin.request()
    newest = await admin.client.get("/admin/approvals?limit=1", headers=admin.auth())
    assert [a["status"] for a in newest.json()["approvals"]] == ["pending"]
    empty = await admin.client.get("/admin/approvals?status=approved&limit=5", headers=admin.auth())
    assert [a["id"] for a in empty.json()["approvals"]] == [approval.id]
    empty = await admin.client.get("/admin/approvals?status=used", headers=admin.auth())
    assert empty.json()["approvals"] == []


@pytest.mark.anyio
async def test_a_deny_is_final_and_a_second_decision_is_refused_and_audited(admin: Admin) -> None:
    approval = admin.request()
    denied = await admin.client.post(f"/admin/approvals/{approval.id}/deny", headers=admin.auth())
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    again = await admin.client.post(f"/admin/approvals/{approval.id}/approve", headers=admin.auth())
    assert again.status_code == 409 and again.json()["error"] == "approval_not_pending"
    assert admin.approvals.get(approval.id).status == "denied"  # type: ignore[union-attr]
    first, second = admin.sink.records()
    assert (first.decision, first.status, second.decision, second.status) == ("deny", "ok", "allow", "error")
    assert second.detail["error_kind"] == "approval_not_pending"


@pytest.mark.anyio
async def test_unknown_ids_bad_bodies_and_bad_filters_get_clear_errors(admin: Admin) -> None:
    missing = await admin.client.get("/admin/approvals/apr_nope", headers=admin.auth())
    assert missing.status_code == 404 and missing.json()["error"] == "approval_not_found"
    approval = admin.request()
    for body in (b'{"note": 5}', b'{"note": "x", "approver": "mallory"}', b"not json"):
        bad = await admin.client.post(
            f"/admin/approvals/{approval.id}/approve", headers=admin.auth(), content=body
        )
        assert bad.status_code == 400 and bad.json()["error"] == "bad_request"
    assert admin.approvals.get(approval.id).status == "pending"  # type: ignore[union-attr]
    bad_limit = await admin.client.get("/admin/approvals?limit=-1", headers=admin.auth())
    assert bad_limit.status_code == 400 and "limit" in bad_limit.json()["message"]
    bad_filter = await admin.client.get("/admin/approvals?status=everything", headers=admin.auth())
    assert bad_filter.status_code == 400 and "unknown status `everything`" in bad_filter.json()["message"]


@pytest.mark.anyio
async def test_no_decision_is_made_when_it_cannot_be_audited(tmp_path: Path) -> None:
    async for admin in _admin(tmp_path, failing_audit=True):
        approval = admin.request()
        response = await admin.client.post(f"/admin/approvals/{approval.id}/approve", headers=admin.auth())
        assert response.status_code == 503 and response.json()["error"] == "audit_unavailable"
        assert admin.approvals.get(approval.id).status == "pending"  # type: ignore[union-attr]


def _forged(token: str) -> str:
    # The right shape and a real id, a made-up secret.
    return token[:17] + ("A" if token[17] != "A" else "B") + token[18:]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("which", "reason"),
    [
        ("none", "missing bearer token"),
        ("agent", "not an admin token"),
        ("forged", "unknown token"),
        ("revoked", "revoked token"),
        ("basic", "missing bearer token"),
    ],
)
async def test_anything_but_a_live_admin_token_gets_401_and_is_audited_without_the_token(
    admin: Admin, which: str, reason: str
) -> None:
    approval = admin.request()
    token = {"agent": admin.agent_token, "forged": _forged(admin.token), "revoked": admin.token}.get(
        which, ""
    )
    if which == "revoked":
        assert admin.admins.revoke("alice") == 1
    headers = {"none": {}, "basic": {"Authorization": "Basic YWxpY2U6cHc="}}.get(which, admin.auth(token))
    for method, path in (
        ("GET", "/admin/approvals"),
        ("GET", f"/admin/approvals/{approval.id}"),
        ("POST", f"/admin/approvals/{approval.id}/approve"),
        ("POST", f"/admin/approvals/{approval.id}/deny"),
    ):
        response = await admin.client.request(method, path, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"].startswith("Bearer ")
        assert "approvals" not in response.json()
    assert admin.approvals.get(approval.id).status == "pending"  # type: ignore[union-attr]
    records = admin.sink.records()
    assert [r.kind for r in records] == ["admin_auth_failure"] * 4
    assert {r.detail["reason"] for r in records} == {reason}
    assert records[0].detail["client"] == "203.0.113.9"
    if which == "agent":
        assert records[0].detail["token_kind"] == "agent"  # an agent reaching for admin powers stands out
    text = admin.audit_text()
    for secret in {admin.token, admin.agent_token, admin.token[18:], admin.agent_token[18:]}:
        assert secret not in text


@pytest.mark.e2e
def test_an_admin_token_is_not_an_agent_token_on_the_mcp_endpoint(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(
        "version: 1\nagents:\n  agent-a:\n    grants:\n      - tool: leaky.echo\n", watch_policy=False
    )
    admins = SQLiteAdminStore(gw.settings.data_dir / "admins.db")
    _, token = admins.create("alice")
    admins.close()
    response = httpx.post(
        gw.url,
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        },
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        timeout=10,
    )
    assert response.status_code == 401
    failure = gw.audit()[-1]
    assert failure.kind == "auth_failure" and token not in json.dumps(dict(failure.detail))
