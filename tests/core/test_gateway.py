"""``Gateway.call_tool`` in process, against an in-memory upstream (as httpx tests use ``MockTransport``):
the catalog and naming, a call and its records, and 2026-07-28 ``input_required`` rounds (sealed,
bound, single use), with real policy, vault and audit stores. Each test runs in milliseconds."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.channel import CURRENT_RELAY
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.core.request_state import Resume
from mcp_gateway.core.state import PolicyHolder, SecretsView
from mcp_gateway.errors import CallRefused, InvalidRequestState, ProtocolRefusal, ToolNotGranted
from mcp_gateway.policy.load import parse_policy_text
from mcp_gateway.types import Principal, ToolSpec
from mcp_gateway.vault.crypto import Keyring, MasterKey
from mcp_gateway.vault.service import Vault
from mcp_gateway.vault.store import SQLiteSecretStore

pytestmark = pytest.mark.anyio

AGENT = Principal("agent-a", "tok-a")
OTHER = Principal("agent-b", "tok-b")
SECRET = "in-memory-secret-9f8e7d"
POLICY = """
version: 1
agents:
  agent-a:
    grants:
      - {id: all, tool: "up.*"}
  agent-b:
    grants:
      - {id: all-b, tool: "up.*"}
"""
SAMPLE = {"method": "sampling/createMessage", "params": {"messages": [], "maxTokens": 5}}
ELICIT = {"method": "elicitation/create", "params": {"message": "?", "requestedSchema": {"type": "object"}}}


@dataclass
class _Config:
    relay_requests: tuple[str, ...] = ("sampling",)


@dataclass
class InMemoryUpstream:
    """What the gateway needs of an upstream connection, answering from a script."""

    name: str = "up"
    prefix: str = "up."
    connected: bool = True
    needs_vault: bool = False
    config: _Config = field(default_factory=_Config)
    answers: list[dict[str, Any] | Exception] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any], Any, Any]] = field(default_factory=list)

    @property
    def tools(self) -> dict[str, ToolSpec]:
        if not self.connected:
            return {}
        definition = {"name": "up.echo", "inputSchema": {"type": "object"}}
        return {"up.echo": ToolSpec("up.echo", self.name, "echo", definition)}

    async def call_payload(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        input_responses: Mapping[str, Any] | None = None,
        request_state: str | None = None,
    ) -> dict[str, Any]:
        self.calls.append((tool, arguments, input_responses, request_state))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class _Caller:
    """The relay of a 2026-07-28 caller that declared ``capabilities``."""

    wants_progress = False
    modern = True

    def __init__(self, capabilities: dict[str, Any]) -> None:
        self.client_capabilities = types.ClientCapabilities.model_validate(capabilities)


@pytest.fixture
def upstream() -> InMemoryUpstream:
    return InMemoryUpstream()


@pytest.fixture
def gateway(tmp_path: Path, upstream: InMemoryUpstream) -> Iterator[Gateway]:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    vault = Vault(SQLiteSecretStore(tmp_path / "vault.db"), Keyring(MasterKey.generate()))
    vault.put("api", SECRET.encode())
    yield Gateway(
        policy=PolicyHolder(policy_file, parse_policy_text(POLICY)),
        secrets=SecretsView(vault),
        audit=AuditLog(SQLiteAuditSink(tmp_path / "audit.db")),
        upstreams={"up": upstream},  # type: ignore[dict-item]
    )


@pytest.fixture
def modern_caller() -> Iterator[None]:
    token = CURRENT_RELAY.set(_Caller({"sampling": {}}))  # type: ignore[arg-type]
    yield
    CURRENT_RELAY.reset(token)


def _records(gateway: Gateway) -> list[tuple[str, str]]:
    return [(r.kind, r.status) for r in gateway.audit.sink.records()]  # type: ignore[attr-defined]


async def test_a_call_reaches_the_upstream_and_its_answer_is_scrubbed_and_recorded(
    gateway: Gateway, upstream: InMemoryUpstream
) -> None:
    upstream.answers.append(
        {"resultType": "complete", "content": [{"type": "text", "text": f"key {SECRET}"}]}
    )
    result = await gateway.call_tool(AGENT, "up.echo", {"text": "hi"})
    assert isinstance(result, types.CallToolResult)
    assert result.content[0].text == "key [REDACTED:api]"  # type: ignore[union-attr]
    assert upstream.calls == [("echo", {"text": "hi"}, None, None)]
    assert _records(gateway) == [("intent", ""), ("outcome", "ok")]


async def test_an_unavailable_upstreams_tool_is_refused_and_audited_without_a_call(
    gateway: Gateway, upstream: InMemoryUpstream
) -> None:
    upstream.connected = False
    with pytest.raises(CallRefused, match="upstream `up` is unavailable"):
        await gateway.call_tool(AGENT, "up.echo", {})
    assert upstream.calls == []
    assert _records(gateway) == [("denied", "refused")]


@pytest.mark.usefixtures("modern_caller")
async def test_an_input_required_round_goes_back_sealed_and_resumes_the_upstream_once(
    gateway: Gateway, upstream: InMemoryUpstream
) -> None:
    upstream.answers += [
        {"resultType": "input_required", "inputRequests": {"q": SAMPLE}, "requestState": "upstream-state-1"},
        {"resultType": "complete", "content": [{"type": "text", "text": "done"}]},
    ]
    first = await gateway.call_tool(AGENT, "up.echo", {"text": "hi"})
    assert isinstance(first, types.InputRequiredResult)
    assert first.request_state is not None and "upstream-state-1" not in first.request_state
    answer = {"q": {"role": "assistant", "content": {"type": "text", "text": "42"}, "model": "m"}}
    done = await gateway.call_tool(AGENT, "up.echo", {"text": "hi"}, Resume(answer, first.request_state))
    assert isinstance(done, types.CallToolResult) and not done.is_error
    # The upstream got its own state back, and the agent's answers.
    assert upstream.calls[1][2:] == (answer, "upstream-state-1")
    with pytest.raises(InvalidRequestState):
        await gateway.call_tool(AGENT, "up.echo", {"text": "hi"}, Resume(answer, first.request_state))
    assert len(upstream.calls) == 2
    assert _records(gateway)[-1] == ("denied", "invalid_request_state")


@pytest.mark.usefixtures("modern_caller")
@pytest.mark.parametrize(
    ("who", "arguments"),
    [(OTHER, {"text": "hi"}), (AGENT, {"text": "changed"})],
    ids=["another-agent", "other-arguments"],
)
async def test_a_sealed_state_is_refused_for_another_agent_or_other_arguments(
    gateway: Gateway, upstream: InMemoryUpstream, who: Principal, arguments: dict[str, Any]
) -> None:
    upstream.answers.append(
        {"resultType": "input_required", "inputRequests": {"q": SAMPLE}, "requestState": "s"}
    )
    first = await gateway.call_tool(AGENT, "up.echo", {"text": "hi"})
    assert isinstance(first, types.InputRequiredResult)
    with pytest.raises(InvalidRequestState):
        await gateway.call_tool(who, "up.echo", arguments, Resume({}, first.request_state))
    assert len(upstream.calls) == 1


@pytest.mark.usefixtures("modern_caller")
async def test_input_relay_requests_does_not_allow_is_the_upstreams_error(
    gateway: Gateway, upstream: InMemoryUpstream
) -> None:
    upstream.answers.append(
        {"resultType": "input_required", "inputRequests": {"q": ELICIT}, "requestState": "s"}
    )
    result = await gateway.call_tool(AGENT, "up.echo", {})
    assert isinstance(result, types.CallToolResult) and result.is_error
    assert "`upstreams.up.relay_requests` does not allow" in result.content[0].text  # type: ignore[union-attr]
    assert _records(gateway)[-1] == ("outcome", "upstream_error")


async def test_input_the_caller_did_not_declare_is_minus_32021(
    gateway: Gateway, upstream: InMemoryUpstream
) -> None:
    upstream.answers.append(
        {"resultType": "input_required", "inputRequests": {"q": SAMPLE}, "requestState": "s"}
    )
    token = CURRENT_RELAY.set(_Caller({}))  # type: ignore[arg-type]
    try:
        with pytest.raises(ProtocolRefusal) as refused:
            await gateway.call_tool(AGENT, "up.echo", {})
    finally:
        CURRENT_RELAY.reset(token)
    assert refused.value.code == types.MISSING_REQUIRED_CLIENT_CAPABILITY
    assert refused.value.data == {"requiredCapabilities": {"sampling": {}}}
    assert _records(gateway)[-1] == ("outcome", "protocol_error")


async def test_an_upstreams_protocol_error_passes_on_scrubbed(
    gateway: Gateway, upstream: InMemoryUpstream
) -> None:
    upstream.answers.append(ProtocolRefusal(f"need {SECRET}", code=-32021, data={SECRET: SECRET}))
    with pytest.raises(ProtocolRefusal) as refused:
        await gateway.call_tool(AGENT, "up.echo", {})
    assert SECRET not in str(refused.value) and SECRET not in repr(refused.value.data)
    assert refused.value.code == -32021


async def test_an_ungranted_tool_names_only_what_was_asked(gateway: Gateway) -> None:
    with pytest.raises(ToolNotGranted, match=re.escape("tool `data.secret_tool` is not available")):
        await gateway.call_tool(AGENT, "data.secret_tool", {})
    assert _records(gateway) == [("denied", "not_granted")]
