"""The one governed skeleton, in process: every method meets the same policy, limits, in-flight slot,
quota, sensitive masking, approval rule and audit records. The collaborators are real (a SQLite
audit log, vault and quota store); only ``act`` is a plain function, so each test runs in milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.core import result
from mcp_gateway.core.exchange import Exchange, Granted, ResultRule
from mcp_gateway.core.governed import Governor
from mcp_gateway.core.limits import LimitExceeded, LimitSettings
from mcp_gateway.core.state import PolicyHolder, SecretsView
from mcp_gateway.errors import ApprovalRefused, AuditUnavailable, PolicyDenied, ToolNotGranted, UpstreamError
from mcp_gateway.policy.load import parse_policy_text
from mcp_gateway.quotas.gate import StoreQuotaGate
from mcp_gateway.quotas.model import QuotaExceeded
from mcp_gateway.quotas.store import SQLiteQuotaStore
from mcp_gateway.redact import Redactor
from mcp_gateway.types import Decision, Principal
from mcp_gateway.vault.crypto import Keyring, MasterKey
from mcp_gateway.vault.service import Vault
from mcp_gateway.vault.store import SQLiteSecretStore

pytestmark = pytest.mark.anyio

AGENT = Principal("agent-a", "tok1")
SECRET = "vault-secret-value-123"

# One grant per method's policy key; each with a quota of 2 per hour and a sensitive argument.
POLICY = """
version: 1
agents:
  agent-a:
    grants:
      - id: tool
        tool: up.echo
        args: {text: {sensitive: true, max_length: 50}}
        rate: ["2/hour"]
      - id: resource
        tool: "resource:up:test://*"
        args: {uri: {sensitive: true}}
        rate: ["2/hour"]
      - id: prompt
        tool: prompt:up.greet
        args: {name: {sensitive: true}}
        rate: ["2/hour"]
      - id: relayed
        tool: "up:sampling/createMessage"
        args: {messages: {sensitive: true}}
        rate: ["2/hour"]
      - id: careful
        tool: "prompt:up.careful"
        approval: {required: true}
"""

# (method, policy key, arguments, answer model): one exchange of each kind.
METHODS: list[tuple[str, str, dict[str, Any], type[Any], dict[str, Any]]] = [
    ("tools/call", "up.echo", {"text": "hi"}, types.CallToolResult, {"content": []}),
    (
        "resources/read",
        "resource:up:test://a",
        {"uri": "test://a"},
        types.ReadResourceResult,
        {"contents": []},
    ),
    (
        "prompts/get",
        "prompt:up.greet",
        {"name": "n", "arguments": {}},
        types.GetPromptResult,
        {"messages": []},
    ),
    (
        "sampling/createMessage",
        "up:sampling/createMessage",
        {"messages": [{"role": "user"}], "maxTokens": 5},
        types.ListToolsResult,
        {"tools": []},
    ),
]
IDS = [m[0] for m in METHODS]


@pytest.fixture
def governor(tmp_path: Path) -> Iterator[Governor]:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    vault = Vault(SQLiteSecretStore(tmp_path / "vault.db"), Keyring(MasterKey.generate()))
    vault.put("api", SECRET.encode())
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    quotas = SQLiteQuotaStore(tmp_path / "quotas.db")
    yield Governor(
        policy=PolicyHolder(policy_file, parse_policy_text(POLICY)),
        secrets=SecretsView(vault),
        audit=AuditLog(sink),
        limits=LimitSettings(
            max_argument_bytes=400, max_concurrent_calls_per_agent=1, max_result_bytes=2_000
        ),
        quotas=StoreQuotaGate(quotas),
        audit_hmac_key=b"k" * 32,
    )
    quotas.close()


def _act(payload: dict[str, Any], seen: list[Granted] | None = None) -> Any:
    async def act(granted: Granted) -> tuple[dict[str, Any], str]:
        if seen is not None:
            seen.append(granted)
        return payload, "ok"

    return act


async def _run(
    gov: Governor, method: str, key: str, args: dict[str, Any], model: type[Any], payload: Any
) -> Any:
    return await gov.run(Exchange(AGENT, method, key, args), _act(payload), ResultRule(model))


def _records(gov: Governor) -> list[Any]:
    return gov.audit.sink.records()  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize(("method", "key", "args", "model", "payload"), METHODS, ids=IDS)
async def test_every_method_is_audited_intent_then_outcome_with_its_method(
    governor: Governor, method: str, key: str, args: dict[str, Any], model: type[Any], payload: dict[str, Any]
) -> None:
    answer = await _run(governor, method, key, args, model, payload)
    assert isinstance(answer, model)
    kinds = [(r.kind, r.tool, r.status) for r in _records(governor)]
    assert kinds == [("intent", key, ""), ("outcome", key, "ok")]
    intent = _records(governor)[0]
    assert intent.detail.get("method", "tools/call") == method


@pytest.mark.parametrize(("method", "key", "args", "model", "payload"), METHODS, ids=IDS)
async def test_every_method_counts_against_its_grants_quota(
    governor: Governor, method: str, key: str, args: dict[str, Any], model: type[Any], payload: dict[str, Any]
) -> None:
    for _ in range(2):
        await _run(governor, method, key, args, model, payload)
    with pytest.raises(QuotaExceeded):
        await _run(governor, method, key, args, model, payload)
    assert [r.kind for r in _records(governor)][-1] == "denied"
    assert _records(governor)[-1].status == "quota_exceeded"


@pytest.mark.parametrize(("method", "key", "args", "model", "payload"), METHODS, ids=IDS)
async def test_every_method_records_sensitive_arguments_only_as_hmacs(
    governor: Governor, method: str, key: str, args: dict[str, Any], model: type[Any], payload: dict[str, Any]
) -> None:
    await _run(governor, method, key, args, model, payload)
    intent = _records(governor)[0]
    sensitive = next(iter(set(args) & {"text", "uri", "name", "messages"}))
    assert intent.args[sensitive] != args[sensitive]
    assert "hmac" in str(intent.args[sensitive]).lower()


@pytest.mark.parametrize(("method", "key", "args", "model", "payload"), METHODS, ids=IDS)
async def test_every_method_takes_an_in_flight_slot(
    governor: Governor, method: str, key: str, args: dict[str, Any], model: type[Any], payload: dict[str, Any]
) -> None:
    # The limit is one exchange in flight per agent: a second while the first waits is refused.
    release = anyio.Event()
    entered = anyio.Event()

    async def slow(_: Granted) -> tuple[dict[str, Any], str]:
        entered.set()
        await release.wait()
        return payload, "ok"

    refused: list[BaseException] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(governor.run, Exchange(AGENT, method, key, args), slow, ResultRule(model))
        with anyio.fail_after(5):
            await entered.wait()
        try:
            await _run(governor, method, key, args, model, payload)
        except LimitExceeded as exc:
            refused.append(exc)
        release.set()
    assert len(refused) == 1 and "in flight" in str(refused[0])


@pytest.mark.parametrize(("method", "key", "args", "model", "payload"), METHODS, ids=IDS)
async def test_every_method_is_refused_above_the_argument_limit_without_recording_the_arguments(
    governor: Governor, method: str, key: str, args: dict[str, Any], model: type[Any], payload: dict[str, Any]
) -> None:
    big = {**args, "padding": "x" * 500}
    with pytest.raises(LimitExceeded):
        await _run(governor, method, key, big, model, payload)
    (record,) = _records(governor)
    assert (record.kind, record.status) == ("denied", "limit_exceeded")
    assert "x" * 50 not in str(record.args)


@pytest.mark.parametrize("method", IDS)
async def test_an_ungranted_target_is_refused_and_audited_naming_only_what_was_asked(
    governor: Governor, method: str
) -> None:
    called: list[Granted] = []
    with pytest.raises(ToolNotGranted, match=re.escape("`nope.secret_tool` is not available")):
        await governor.run(
            Exchange(AGENT, method, "nope.secret_tool", {}),
            _act({}, called),
            ResultRule(types.CallToolResult),
        )
    assert called == []
    assert [(r.kind, r.status) for r in _records(governor)] == [("denied", "not_granted")]


async def test_a_constraint_denial_is_audited_before_the_refusal_and_nothing_acts(governor: Governor) -> None:
    called: list[Granted] = []
    with pytest.raises(PolicyDenied):
        await governor.run(
            Exchange(AGENT, "tools/call", "up.echo", {"text": "y" * 60}),
            _act({}, called),
            ResultRule(types.CallToolResult),
        )
    assert called == []
    assert [r.kind for r in _records(governor)] == ["denied"]


async def test_an_exchange_that_needs_a_human_on_a_method_approvals_cannot_carry_is_refused(
    governor: Governor,
) -> None:
    called: list[Granted] = []
    with pytest.raises(ApprovalRefused, match="needs approval"):
        await governor.run(
            Exchange(AGENT, "prompts/get", "prompt:up.careful", {"name": "careful"}),
            _act({"messages": []}, called),
            ResultRule(types.GetPromptResult),
        )
    assert called == []


async def test_no_act_without_a_durable_intent(governor: Governor) -> None:
    called: list[Granted] = []

    async def refuse(*_: Any, **__: Any) -> None:
        raise AuditUnavailable("audit store down")

    governor.audit.append = refuse  # type: ignore[method-assign]
    with pytest.raises(AuditUnavailable):
        await _run(
            governor,
            "resources/read",
            "resource:up:test://a",
            {"uri": "test://a"},
            types.ReadResourceResult,
            {},
        )
    assert called == []


async def test_a_document_above_the_result_limit_is_refused_whole_and_recorded_too_large(
    governor: Governor,
) -> None:
    payload = {"contents": [{"uri": "test://a", "text": "z" * 5_000}]}
    with pytest.raises(LimitExceeded, match="above the limit"):
        await _run(
            governor,
            "resources/read",
            "resource:up:test://a",
            {"uri": "test://a"},
            types.ReadResourceResult,
            payload,
        )
    assert [(r.kind, r.status) for r in _records(governor)][-1] == ("outcome", "too_large")


async def test_an_upstream_failure_under_a_raise_rule_is_recorded_then_raised_scrubbed(
    governor: Governor,
) -> None:
    async def fail(_: Granted) -> tuple[dict[str, Any], str]:
        raise UpstreamError(f"upstream said {SECRET}")

    with pytest.raises(UpstreamError) as raised:
        await governor.run(
            Exchange(AGENT, "prompts/get", "prompt:up.greet", {"name": "n"}),
            fail,
            ResultRule(types.GetPromptResult),
        )
    assert SECRET not in str(raised.value)
    assert [(r.kind, r.status) for r in _records(governor)][-1] == ("outcome", "upstream_error")


async def test_a_relayed_request_authorized_by_its_upstream_config_needs_no_grant(governor: Governor) -> None:
    def allow(_: Exchange) -> Decision:
        return Decision("allow", ("upstreams.other.relay_requests",), ())

    answer = await governor.run(
        Exchange(AGENT, "elicitation/create", "other:elicitation/create", {"message": "?"}),
        _act({"tools": []}),
        ResultRule(types.ListToolsResult),
        authorize=allow,
        slot="agent-a <- other",
    )
    assert answer.tools == []
    assert _records(governor)[0].detail["rule_ids"] == ["upstreams.other.relay_requests"]


@pytest.mark.parametrize("key", ["up.echo", "nope.ungranted"])
async def test_arguments_nested_past_any_parser_are_refused_by_the_limit_before_policy_walks_them(
    governor: Governor, key: str
) -> None:
    deep: Any = "x"
    for _ in range(5_000):  # far past Python's recursion limit: walking it recursively would crash
        deep = [deep]
    with pytest.raises(LimitExceeded, match="deep"):
        await _run(governor, "tools/call", key, {"text": deep}, types.CallToolResult, {"content": []})
    assert [(r.kind, r.status) for r in _records(governor)] == [("denied", "limit_exceeded")]


def _deep(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    "payload",
    [
        {"content": [{"type": "text", "text": "plain"}]},
        {"content": [{"type": "text", "text": f"key {SECRET}"}]},
        {"content": [{"type": "text", "text": f"a\nb\\ {SECRET}"}], "structuredContent": {"k": "100%"}},
        {"content": [{"type": "text", "text": "a\ud800"}]},
        {"content": [], "structuredContent": _deep(70)},
        {"content": [{"type": "text", "text": "[{" * 50}]},
        {"content": [], "structuredContent": {"rows": [{"i": i} for i in range(70)]}},
        {"content": [], "structuredContent": {"rows": [{"i": i} for i in range(70)] + [{"k": SECRET}]}},
        {"content": [{"type": "text", "text": "z" * 3_000}]},
        {"content": "not a list"},
    ],
    ids=[
        "clean",
        "secret",
        "escaped-secret",
        "surrogate",
        "too-deep",
        "brackets",
        "many-objects",
        "many-objects-and-a-secret",
        "oversize",
        "garbage",
    ],
)
async def test_an_answer_settles_the_same_with_or_without_the_shortcuts_over_its_json_text(
    governor: Governor, monkeypatch: pytest.MonkeyPatch, payload: dict[str, Any]
) -> None:
    async def settle_once() -> tuple[Any, dict[str, Any]]:
        answer = await governor.run(
            Exchange(AGENT, "tools/call", "up.echo", {"text": "hi"}),
            _act(payload),
            ResultRule(types.CallToolResult, oversize="truncate", failure="result"),
        )
        outcome = _records(governor)[-1]
        assert outcome.kind == "outcome"
        detail = {k: v for k, v in outcome.detail.items() if k != "latency_ms"}
        return answer.model_dump(mode="json"), {"status": outcome.status, **detail}

    fast = await settle_once()
    # The walks the shortcuts stand in for: every string scrubbed, the result checked in Python.
    monkeypatch.setattr(result, "_encoded", lambda *_: None)
    monkeypatch.setattr(Redactor, "clean_json", lambda *_: False)
    slow = await settle_once()
    assert fast == slow
    assert SECRET not in str(fast)
