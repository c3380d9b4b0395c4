"""Incidents as resources of the gateway (``incident://<id>``): listed and read only under a grant,
each read audited like any resource read, an unknown id refused like an ungranted one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.core.federation import Federation
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.core.state import PolicyHolder, SecretsView
from mcp_gateway.errors import ToolNotGranted
from mcp_gateway.incidents.model import Fix, Incident
from mcp_gateway.incidents.store import IncidentStore, new_id, open_incident_store
from mcp_gateway.policy.load import parse_policy_text
from mcp_gateway.types import Principal
from mcp_gateway.vault.crypto import Keyring, MasterKey
from mcp_gateway.vault.service import Vault
from mcp_gateway.vault.store import SQLiteSecretStore

pytestmark = pytest.mark.anyio

HEALER = Principal("healer", "tok-h")
OTHER = Principal("reporter", "tok-r")
POLICY = """
version: 1
agents:
  healer:
    grants:
      - {id: incidents, tool: "resource:gateway:incident://*"}
  reporter:
    grants:
      - {id: nothing-here, tool: "resource:gateway:runbook://*"}
"""
FAILING = [{"check": "null_rate(cur)", "value": 0.5, "min": None, "max": 0.0, "passed": False}]


@pytest.fixture
def incidents(tmp_path: Path) -> Iterator[IncidentStore]:
    store = open_incident_store(path=tmp_path / "incidents.db")
    yield store
    store.close()


@pytest.fixture
def federation(tmp_path: Path, incidents: IncidentStore) -> Federation:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    vault = Vault(SQLiteSecretStore(tmp_path / "vault.db"), Keyring(MasterKey.generate()))
    gateway = Gateway(
        policy=PolicyHolder(policy_file, parse_policy_text(POLICY)),
        secrets=SecretsView(vault),
        audit=AuditLog(SQLiteAuditSink(tmp_path / "audit.db")),
        incidents=incidents,
    )
    return Federation(gateway)


def raise_one(store: IncidentStore, now: float = 1.0) -> Incident:
    incident, _ = store.raise_or_add(
        new_id(),
        monitor="revenue_nulls",
        table="lake.s.revenue",
        job="nightly",
        failing=FAILING,
        opened_seq=4,
        now=now,
    )
    return incident


async def test_a_granted_agent_lists_and_reads_an_incident_and_the_read_is_audited(
    federation: Federation, incidents: IncidentStore
) -> None:
    old = raise_one(incidents)
    incidents.recover(old.id, [Fix("c1", "healer", "data.switch_in", 9)], now=2.0)
    current = raise_one(incidents, now=3.0)
    listed = [str(r.uri) for r in await federation.list_resources(HEALER)]
    assert listed == [current.uri, old.uri]
    read = await federation.read_resource(HEALER, old.uri)
    body = json.loads(read.contents[0].text)  # type: ignore[union-attr]
    assert read.contents[0].mime_type == "application/json"
    assert body["status"] == "recovered" and body["resolution"][0]["call_id"] == "c1"
    assert body["failing"] == FAILING
    records = federation.gateway.audit.sink.records()  # type: ignore[attr-defined]
    assert [(r.kind, r.status) for r in records if r.tool == f"resource:gateway:{old.uri}"] == [
        ("intent", ""),
        ("outcome", "ok"),
    ]


async def test_an_ungranted_agent_sees_none_and_is_refused_with_an_audit_record(
    federation: Federation, incidents: IncidentStore
) -> None:
    incident = raise_one(incidents)
    assert [str(r.uri) for r in await federation.list_resources(OTHER)] == []
    with pytest.raises(ToolNotGranted):
        await federation.read_resource(OTHER, incident.uri)
    records = federation.gateway.audit.sink.records()  # type: ignore[attr-defined]
    assert [r.kind for r in records if r.tool == f"resource:gateway:{incident.uri}"] == ["denied"]


async def test_an_unknown_incident_is_refused_like_an_ungranted_one(federation: Federation) -> None:
    with pytest.raises(ToolNotGranted):
        await federation.read_resource(HEALER, "incident://inc_0000000000000000")
