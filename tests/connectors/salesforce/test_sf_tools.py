"""The `salesforce` toolset: tool.run against the emulator over real HTTP, approvals, audit images, revert."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import free_port
from mcp_gateway.connectors.salesforce import SalesforceOrgSettings
from mcp_gateway.demo.emulators.salesforce import EmulatorServer, create_app
from mcp_gateway.demo.emulators.salesforce_data import ACME_OPPORTUNITY_ID, GLOBEX_OPPORTUNITY_ID
from mcp_gateway.demo.emulators.salesforce_state import EmulatedOrg
from mcp_gateway.tools.base import NeedsApproval, ToolContext, ToolFailure, Toolset
from mcp_gateway.tools.salesforce import build_salesforce_toolset, change_factor_exceeded
from mcp_gateway.types import Principal, SecretValue

pytestmark = pytest.mark.e2e

SECRET = "tool-test-client-SECRET-77"
OPP = ACME_OPPORTUNITY_ID
FIVE_X = ({"change_factor": {"field": "Amount", "over": 5}},)


@dataclass
class Env:
    server: EmulatorServer
    toolset: Toolset
    private_pem: bytes
    audit: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    calls: int = 0

    async def run(
        self, tool: str, args: Mapping[str, Any], *, approved: bool = False, conditions: tuple[Any, ...] = ()
    ) -> tuple[dict[str, Any], ToolContext]:
        """Run a tool the way the gateway core does; remember the outcome for revert lookups."""
        self.calls += 1
        ctx = ToolContext(
            principal=Principal(agent="agent-a", token_id="t1"),
            call_id=f"call-{self.calls}",
            approval_conditions=conditions,
            approved=approved,
            policy_extra={"audit_lookup": self.lookup},
        )
        built = self.toolset.tools[tool]
        try:
            result = await built.run(ctx, built.input_model.model_validate(args))
        except (ToolFailure, NeedsApproval) as exc:
            self.outputs.append(f"{exc} {json.dumps(exc.detail, default=str)} {json.dumps(ctx.audit_detail)}")
            raise
        self.outputs.append(json.dumps(result) + json.dumps(ctx.audit_detail))
        self.audit[ctx.call_id] = {
            "tool": tool,
            "status": "ok",
            "agent": "agent-a",
            "detail": ctx.audit_detail,
        }
        return result, ctx

    async def lookup(self, call_id: str) -> Mapping[str, Any] | None:
        return self.audit.get(call_id)


def _keypair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.fixture(scope="module")
def keypair() -> tuple[bytes, bytes]:
    return _keypair()


@pytest.fixture
def server(keypair: tuple[bytes, bytes]) -> Iterator[EmulatorServer]:
    org = EmulatedOrg(
        client_id="cid", client_secret=SECRET, username="int@acme.example", public_key_pem=keypair[1]
    )
    emulator = EmulatorServer(create_app(org), free_port())
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
async def env(server: EmulatorServer, keypair: tuple[bytes, bytes]) -> AsyncIterator[Env]:
    secrets = {"sf-secret": SECRET.encode(), "sf-key": keypair[0]}
    orgs = {
        "prod": SalesforceOrgSettings(
            login_url=server.url,
            allow_private_network=True,
            client_id="cid",
            flow="client_credentials",
            client_secret="secret://sf-secret",
        ),
        "prod-jwt": SalesforceOrgSettings(
            login_url=server.url,
            allow_private_network=True,
            client_id="cid",
            flow="jwt_bearer",
            username="int@acme.example",
            private_key="secret://sf-key",
        ),
    }
    toolset = build_salesforce_toolset(orgs, lambda name: SecretValue(name, secrets[name]))
    state = Env(server, toolset, keypair[0])
    yield state
    assert toolset.stop is not None
    await toolset.stop()
    # No secret value in any result, error message, error detail or audit detail of the test.
    tokens = list(server.emulator.sessions)
    everything = "\n".join(state.outputs)
    for value in [SECRET, keypair[0].decode(), *tokens]:
        assert value not in everything
    assert "PRIVATE KEY" not in everything


@pytest.mark.anyio
async def test_get_record_reads_the_requested_fields(env: Env) -> None:
    result, _ = await env.run(
        "salesforce.get_record",
        {"org": "prod-jwt", "object": "Opportunity", "id": OPP, "fields": ["Name", "Amount"]},
    )
    assert result["record"] == {"Name": "Acme - Platform renewal", "Amount": 1000000.0}


@pytest.mark.anyio
async def test_patch_lands_and_audits_before_and_after_images(env: Env) -> None:
    args = {
        "org": "prod",
        "object": "Opportunity",
        "id": OPP,
        "fields": {"Amount": 1500000, "Probability": 90},
    }
    result, ctx = await env.run("salesforce.patch_record", args, conditions=FIVE_X)
    assert result["audit_id"] == ctx.call_id
    assert ctx.audit_detail["before"] == {"Amount": 1000000.0, "Probability": 80.0}
    assert ctx.audit_detail["after"] == {"Amount": 1500000.0, "Probability": 90.0}
    assert {k: ctx.audit_detail[k] for k in ("org", "object", "id")} == {
        "org": "prod",
        "object": "Opportunity",
        "id": OPP,
    }
    assert env.server.emulator.record("Opportunity", OPP)["Amount"] == 1500000.0


@pytest.mark.anyio
async def test_a_change_over_5x_needs_approval_and_writes_nothing(env: Env) -> None:
    args = {"org": "prod", "object": "Opportunity", "id": OPP, "fields": {"Amount": 10000000}}
    before = env.server.emulator.record("Opportunity", OPP)
    with pytest.raises(NeedsApproval) as info:
        await env.run("salesforce.patch_record", args, conditions=FIVE_X)
    assert "10.0x" in info.value.reason and "over 5x" in info.value.reason
    assert info.value.detail["before"] == {"Amount": 1000000.0}
    assert info.value.detail["proposed"] == {"Amount": 10000000}
    assert env.server.emulator.record("Opportunity", OPP) == before


@pytest.mark.anyio
async def test_an_approved_5x_change_lands(env: Env) -> None:
    args = {"org": "prod", "object": "Opportunity", "id": OPP, "fields": {"Amount": 10000000}}
    result, _ = await env.run("salesforce.patch_record", args, conditions=FIVE_X, approved=True)
    assert result["after"] == {"Amount": 10000000.0}
    assert env.server.emulator.record("Opportunity", OPP)["Amount"] == 10000000.0


@pytest.mark.anyio
async def test_revert_restores_the_before_image(env: Env) -> None:
    args = {
        "org": "prod",
        "object": "Opportunity",
        "id": OPP,
        "fields": {"Amount": 1200000, "Description": "x"},
    }
    patched, _ = await env.run("salesforce.patch_record", args)
    result, ctx = await env.run("salesforce.revert_patch", {"audit_id": patched["audit_id"]})
    record = env.server.emulator.record("Opportunity", OPP)
    assert (record["Amount"], record["Description"]) == (1000000.0, None)
    assert result["reverted"] == patched["audit_id"]
    assert ctx.audit_detail["before"] == {"Amount": 1200000.0, "Description": "x"}
    assert ctx.audit_detail["after"] == {"Amount": 1000000.0, "Description": None}
    assert ctx.audit_detail["reverts"] == patched["audit_id"]


@pytest.mark.anyio
async def test_a_second_revert_says_already_reverted_and_writes_nothing(env: Env) -> None:
    args = {"org": "prod", "object": "Opportunity", "id": OPP, "fields": {"Amount": 1200000}}
    patched, _ = await env.run("salesforce.patch_record", args)
    await env.run("salesforce.revert_patch", {"audit_id": patched["audit_id"]})
    served = env.server.emulator.orgs[0].api_usage
    again, ctx = await env.run("salesforce.revert_patch", {"audit_id": patched["audit_id"]})
    assert again["status"] == "already_reverted" and "already reverted" in again["message"]
    assert "changed since" not in again["message"]
    assert ctx.audit_detail["already_reverted"] is True and ctx.audit_detail["applied"] is False
    # One REST request, the read: a revert that wrote would also PATCH and read back.
    assert env.server.emulator.orgs[0].api_usage == served + 1
    assert env.server.emulator.record("Opportunity", OPP)["Amount"] == 1000000.0


@pytest.mark.anyio
async def test_revert_after_a_concurrent_change_is_refused_and_names_the_field(env: Env) -> None:
    args = {
        "org": "prod",
        "object": "Opportunity",
        "id": OPP,
        "fields": {"Amount": 1200000, "Probability": 85},
    }
    patched, _ = await env.run("salesforce.patch_record", args)
    env.server.emulator.set_fields("Opportunity", OPP, {"Amount": 1300000.0})
    with pytest.raises(ToolFailure) as info:
        await env.run("salesforce.revert_patch", {"audit_id": patched["audit_id"]})
    assert "`Amount`" in str(info.value) and "`Probability`" not in str(info.value)
    assert info.value.detail["conflicts"] == {"Amount": {"after_patch": 1200000.0, "now": 1300000.0}}
    assert env.server.emulator.record("Opportunity", OPP)["Amount"] == 1300000.0


@pytest.mark.anyio
async def test_revert_of_an_unknown_or_foreign_audit_id_is_refused(env: Env) -> None:
    with pytest.raises(ToolFailure, match="no salesforce patch with audit id `nope`"):
        await env.run("salesforce.revert_patch", {"audit_id": "nope"})
    await env.run("salesforce.get_record", {"org": "prod", "object": "Opportunity", "id": OPP})
    with pytest.raises(ToolFailure, match=r"not a completed salesforce\.patch_record"):
        await env.run("salesforce.revert_patch", {"audit_id": "call-2"})


@pytest.mark.anyio
async def test_an_agent_cannot_revert_another_agents_patch(env: Env) -> None:
    args = {"org": "prod", "object": "Opportunity", "id": OPP, "fields": {"Amount": 1200000}}
    patched, _ = await env.run("salesforce.patch_record", args)
    env.audit[patched["audit_id"]]["agent"] = "agent-b"
    with pytest.raises(ToolFailure, match="another agent's patch"):
        await env.run("salesforce.revert_patch", {"audit_id": patched["audit_id"]})
    assert env.server.emulator.record("Opportunity", OPP)["Amount"] == 1200000.0


@pytest.mark.anyio
async def test_revert_without_an_audit_lookup_is_refused(env: Env) -> None:
    tool = env.toolset.tools["salesforce.revert_patch"]
    ctx = ToolContext(principal=Principal(agent="a", token_id="t"), call_id="c")
    with pytest.raises(ToolFailure, match="needs the audit log"):
        await tool.run(ctx, tool.input_model.model_validate({"audit_id": "x"}))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            {"org": "staging", "object": "Opportunity", "id": OPP, "fields": {"Amount": 1}},
            "unknown salesforce org",
        ),
        ({"org": "prod", "object": "Invoice", "id": OPP, "fields": {"Amount": 1}}, "NOT_FOUND"),
        ({"org": "prod", "object": "Opportunity", "id": OPP, "fields": {"Bogus": 1}}, "INVALID_FIELD"),
        (
            {"org": "prod", "object": "Opportunity", "id": OPP, "fields": {"IsClosed": True}},
            "INVALID_FIELD_FOR_INSERT_UPDATE",
        ),
        (
            {"org": "prod", "object": "Opportunity", "id": "006000000000999", "fields": {"Amount": 1}},
            "NOT_FOUND",
        ),
    ],
)
@pytest.mark.anyio
async def test_salesforce_refusals_become_clear_tool_failures(
    env: Env, args: dict[str, Any], message: str
) -> None:
    with pytest.raises(ToolFailure, match=message):
        await env.run("salesforce.patch_record", args)


@pytest.mark.anyio
async def test_an_unknown_approval_condition_fails_closed(env: Env) -> None:
    args = {"org": "prod", "object": "Opportunity", "id": GLOBEX_OPPORTUNITY_ID, "fields": {"Amount": 50001}}
    with pytest.raises(ToolFailure, match="not supported"):
        await env.run("salesforce.patch_record", args, conditions=({"weekday_only": True},))
    assert env.server.emulator.record("Opportunity", GLOBEX_OPPORTUNITY_ID)["Amount"] == 50000.0


@pytest.mark.anyio
async def test_tools_declare_honest_annotations(env: Env) -> None:
    defs = {name: tool.definition()["annotations"] for name, tool in env.toolset.tools.items()}
    assert defs["salesforce.get_record"]["readOnlyHint"] is True
    assert defs["salesforce.patch_record"]["readOnlyHint"] is False
    assert defs["salesforce.patch_record"]["destructiveHint"] is True
    assert defs["salesforce.revert_patch"]["destructiveHint"] is True
    assert env.toolset.name == "salesforce"


@pytest.mark.parametrize(
    ("old", "new", "exceeds"),
    [
        (1000000.0, 5000000, False),
        (1000000.0, 5000001, True),
        (1000000.0, 199999, True),
        (1000000.0, 200000, False),
        (None, 10, True),
        (0, 10, True),
        (10, 0, True),
        (10, None, True),
        (None, None, False),
        (0, 0, False),
        (100, -100, True),
        (100, "abc", True),
        (100, True, True),
        ("100", 400, False),
    ],
)
def test_change_factor_counts_either_direction_and_fails_closed(old: Any, new: Any, exceeds: bool) -> None:
    assert (change_factor_exceeded(old, new, 5) is not None) is exceeds
