"""The `salesforce` toolset through a real gateway, driven by the MCP SDK client over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import GatewayFactory, RunningGateway, connect, free_port
from mcp_gateway.connectors.salesforce import SalesforceOrgSettings
from mcp_gateway.demo.emulators.salesforce import EmulatorServer, create_app
from mcp_gateway.demo.emulators.salesforce_data import ACME_OPPORTUNITY_ID
from mcp_gateway.demo.emulators.salesforce_state import EmulatedOrg
from mcp_gateway.tools.salesforce import build_salesforce_toolset

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

SECRET = "gateway-e2e-client-SECRET-9"
OPP = ACME_OPPORTUNITY_ID
POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - id: sf-read
        tool: salesforce.get_record
        args: {org: {in: [prod]}}
      - id: sf-patch
        tool: salesforce.patch_record
        args:
          org: {in: [prod]}
          object: {in: [Opportunity]}
          fields: {subset_of: [Amount, StageName, Probability], properties: {Amount: {min: 0, max: 50000000}}}
        approval:
          when:
            - change_factor: {field: Amount, over: 5}
      - id: sf-revert
        tool: salesforce.revert_patch
"""


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    server = EmulatorServer(create_app(EmulatedOrg(client_id="cid", client_secret=SECRET)), free_port())
    server.start()
    yield server
    server.stop()


def start(emulator: EmulatorServer, make_gateway: GatewayFactory) -> RunningGateway:
    gateway: list[RunningGateway] = []
    settings = SalesforceOrgSettings(
        login_url=emulator.url,
        client_id="cid",
        client_secret="secret://sf-secret",
        allow_private_network=True,
    )
    toolset = build_salesforce_toolset(
        {"prod": settings}, lambda name: gateway[0].runtime.gateway.secrets.resolve(name)
    )
    gateway.append(make_gateway(POLICY, secrets={"sf-secret": SECRET}, upstreams={}, toolsets=[toolset]))
    return gateway[0]


def body(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    parsed: dict[str, Any] = json.loads(result.content[0].text)
    return parsed


async def test_an_agent_patches_gets_approval_for_a_5x_change_and_reverts_through_the_gateway(
    emulator: EmulatorServer, make_gateway: GatewayFactory
) -> None:
    gw = start(emulator, make_gateway)
    patch = {"org": "prod", "object": "Opportunity", "id": OPP}
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"salesforce.get_record", "salesforce.patch_record", "salesforce.revert_patch"} <= names
        small = body(
            await client.call_tool("salesforce.patch_record", {**patch, "fields": {"Amount": 1200000}})
        )
        assert small["before"] == {"Amount": 1000000.0} and small["after"] == {"Amount": 1200000.0}

        big_args = {**patch, "fields": {"Amount": 12000000}}
        parked = await client.call_tool("salesforce.patch_record", big_args)
        assert parked.is_error  # nothing ran: no client may read it as done
        pending = json.loads(parked.content[0].text)
        assert pending["status"] == "pending_approval"
        assert emulator.emulator.record("Opportunity", OPP)["Amount"] == 1200000.0
        assert gw.runtime.approvals is not None
        gw.runtime.approvals.decide(pending["approval_id"], approve=True, approver="alice")
        approved = body(
            await client.call_tool(
                "salesforce.patch_record", {**big_args, "approval_id": pending["approval_id"]}
            )
        )
        assert emulator.emulator.record("Opportunity", OPP)["Amount"] == 12000000.0

        reverted = body(await client.call_tool("salesforce.revert_patch", {"audit_id": approved["audit_id"]}))
        assert reverted["after"] == {"Amount": 1200000.0}
        assert emulator.emulator.record("Opportunity", OPP)["Amount"] == 1200000.0

        refused = await client.call_tool("salesforce.patch_record", {**patch, "fields": {"Name": "x"}})
        assert refused.is_error and "subset_of" in refused.content[0].text
        assert emulator.emulator.record("Opportunity", OPP)["Name"] == "Acme - Platform renewal"

    outcomes = [r for r in gw.audit() if r.kind == "outcome" and r.tool == "salesforce.patch_record"]
    facts = [r.detail.get("facts", {}) for r in outcomes if r.status == "ok"]
    assert [f["after"] for f in facts] == [{"Amount": 1200000.0}, {"Amount": 12000000.0}]
    assert facts[1]["before"] == {"Amount": 1200000.0}
    everything = json.dumps([(r.args, r.detail) for r in gw.audit()], default=str)
    for secret in [SECRET, *emulator.emulator.sessions]:
        assert secret not in everything


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ({"object": "Opportunity", "fields": {"OwnerId": "005000000000001AAA"}}, "subset_of"),
        ({"object": "Opportunity", "fields": {"Amount": 900_000_000}}, "above max"),
        ({"object": "Opportunity", "fields": {"Amount": -5}}, "below min"),
        ({"object": "Lead", "fields": {"Amount": 1}}, "`object`"),
        ({"object": "Opportunity", "org": "other", "fields": {"Amount": 1}}, "`org`"),
    ],
)
async def test_an_injected_patch_outside_the_grant_is_refused_audited_and_never_reaches_salesforce(
    emulator: EmulatorServer, make_gateway: GatewayFactory, args: dict[str, Any], why: str
) -> None:
    gw = start(emulator, make_gateway)
    before = dict(emulator.emulator.record("Opportunity", OPP))
    usage = emulator.emulator.orgs[0].api_usage
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        refused = await client.call_tool("salesforce.patch_record", {"org": "prod", "id": OPP, **args})
    assert refused.is_error and why in refused.content[0].text
    assert emulator.emulator.record("Opportunity", OPP) == before
    assert emulator.emulator.orgs[0].api_usage == usage  # not even read: refused before the call
    denied = [r for r in gw.audit() if r.kind == "denied"]
    assert denied and denied[-1].status == "denied" and denied[-1].tool == "salesforce.patch_record"
    assert not [r for r in gw.audit() if r.kind == "intent"]
