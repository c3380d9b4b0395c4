"""``ResourceSubscriptions`` in process, against an in-memory upstream: each update delivered to an agent
is audited (one compact ``notification`` record, durable before the agent is told), a drop for a lost
grant is recorded as a denial, and no record means no delivery."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.core.state import PolicyHolder, SecretsView
from mcp_gateway.core.subscriptions import ResourceSubscriptions
from mcp_gateway.policy.load import parse_policy_text
from mcp_gateway.types import AuditRecord, Principal
from mcp_gateway.vault.crypto import Keyring, MasterKey
from mcp_gateway.vault.service import Vault
from mcp_gateway.vault.store import SQLiteSecretStore

pytestmark = pytest.mark.anyio

A, B = Principal("agent-a", "tok-a"), Principal("agent-b", "tok-b")
SECRET = "subscription-secret-5c4b3a"
URI = f"test://doc?key={SECRET}"
POLICY = """
version: 1
agents:
  agent-a:
    grants:
      - {id: a-docs, tool: "resource:up:test://*"}
  agent-b:
    grants:
      - {id: b-docs, tool: "resource:up:test://*"}
"""
WITHOUT_B = """
version: 1
agents:
  agent-a:
    grants:
      - {id: a-docs, tool: "resource:up:test://*"}
"""


@dataclass
class WatchedUpstream:
    """What subscriptions need of an upstream connection."""

    name: str = "up"
    prefix: str = "up."
    subscribable: bool = True
    tools: dict[str, object] = field(default_factory=dict)
    subscribed: list[str] = field(default_factory=list)
    on_resource_updated: object = None

    async def subscribe_resource(self, uri: str) -> None:
        self.subscribed.append(uri)

    async def unsubscribe_resource(self, uri: str) -> None:
        self.subscribed.remove(uri)


@dataclass
class Sink:
    """A session's update stream: the URIs it was told about."""

    uris: list[str] = field(default_factory=list)
    broken: bool = False

    async def send_resource_updated(self, uri: str) -> None:
        if self.broken:
            raise ConnectionError("stream closed")
        self.uris.append(uri)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    vault = Vault(SQLiteSecretStore(tmp_path / "vault.db"), Keyring(MasterKey.generate()))
    vault.put("api", SECRET.encode())
    yield Gateway(
        policy=PolicyHolder(policy_file, parse_policy_text(POLICY)),
        secrets=SecretsView(vault),
        audit=AuditLog(SQLiteAuditSink(tmp_path / "audit.db")),
        upstreams={"up": WatchedUpstream()},  # type: ignore[dict-item]
    )


async def _owner(_: Principal, uri: str) -> str | None:
    return "up" if uri.startswith("test://") else None


async def _watched(gateway: Gateway) -> tuple[ResourceSubscriptions, Sink, Sink]:
    subscriptions = ResourceSubscriptions(gateway, _owner)
    sinks = Sink(), Sink()
    await subscriptions.subscribe(A, URI, "session-a", sinks[0])
    await subscriptions.subscribe(B, URI, "session-b", sinks[1])
    return subscriptions, *sinks


def _notifications(gateway: Gateway) -> list[AuditRecord]:
    records: list[AuditRecord] = gateway.audit.sink.records()  # type: ignore[attr-defined]
    return [r for r in records if r.kind == "notification"]


async def test_each_delivered_update_is_audited_once_per_agent_with_the_uri_scrubbed(
    gateway: Gateway,
) -> None:
    subscriptions, sink_a, sink_b = await _watched(gateway)
    await subscriptions.updated("up", URI)
    assert sink_a.uris == [URI] and sink_b.uris == [URI]
    records = _notifications(gateway)
    assert [(r.agent, r.decision, r.status) for r in records] == [
        ("agent-a", "allow", "ok"),
        ("agent-b", "allow", "ok"),
    ]
    assert records[0].tool == "resource:up:test://doc?key=[REDACTED:api]"
    assert records[0].detail == {
        "method": "notifications/resources/updated",
        "rule_ids": ["a-docs"],
        "token_id": "tok-a",
    }
    assert SECRET not in repr(records)


async def test_a_drop_for_a_lost_grant_is_recorded_as_a_denial_and_nothing_is_delivered(
    gateway: Gateway,
) -> None:
    subscriptions, sink_a, sink_b = await _watched(gateway)
    gateway.policy.policy = parse_policy_text(WITHOUT_B)
    await subscriptions.updated("up", URI)
    assert sink_a.uris == [URI] and sink_b.uris == []
    assert [(r.agent, r.decision, r.status) for r in _notifications(gateway)] == [
        ("agent-a", "allow", "ok"),
        ("agent-b", "deny", "dropped"),
    ]
    assert subscriptions.watching("up", URI) == {"session-a"}


async def test_an_update_the_session_could_not_take_is_recorded_undelivered(gateway: Gateway) -> None:
    subscriptions, _, sink_b = await _watched(gateway)
    sink_b.broken = True
    await subscriptions.updated("up", URI)
    assert [(r.agent, r.status) for r in _notifications(gateway)] == [
        ("agent-a", "ok"),
        ("agent-b", "ok"),
        ("agent-b", "undelivered"),
    ]


async def test_without_an_audit_record_no_update_is_delivered(gateway: Gateway) -> None:
    subscriptions, sink_a, sink_b = await _watched(gateway)
    await gateway.audit.aclose()
    await subscriptions.updated("up", URI)
    assert sink_a.uris == [] and sink_b.uris == []
