"""The lean 2026-07-28 ``tools/call`` path answers exactly as the SDK path does, and only when it may.

Two gateways with the same policy and upstream, one with ``server.fast_path: false``, get the same raw
requests; their answers (status, content type, JSON body) and audit records must be identical, and
the lean path must have served exactly the requests it is meant to serve.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import CONSTRAINED_ECHO, GatewayFactory, RunningGateway, grants_policy, leaky_stdio
from mcp_gateway.http.lean import FastToolCall

POLICY = grants_policy({"agent-a": [CONSTRAINED_ECHO, "leaky.leak_env", "leaky.route"]})

SECRET = "tok-ABCDEF-0123456789-secret"
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "1"},
}


def _call(
    name: str, arguments: dict[str, Any] | None, request_id: int | str = 1, **params: Any
) -> dict[str, Any]:
    body_params: dict[str, Any] = {"name": name, "_meta": dict(META), **params}
    if arguments is not None:
        body_params["arguments"] = arguments
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": body_params}


def _headers(body: dict[str, Any]) -> dict[str, str]:
    return {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": body["params"].get("name", ""),
    }


# (label, body, header overrides) the lean path serves.
SERVED: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("allowed upstream call", _call("leaky.echo", {"text": "hello"}), {}),
    ("string id, no arguments member", _call("leaky.echo", None, request_id="req-7"), {}),
    ("constraint denial is an error result", _call("leaky.echo", {"text": "forbidden"}), {}),
    ("ungranted tool is a JSON-RPC error", _call("leaky.drop_everything", {}), {}),
    ("upstream echo of a vault secret is redacted", _call("leaky.leak_env", {"var": "API_TOKEN"}), {}),
    ("an Accept wildcard is enough", _call("leaky.echo", {"text": "hi"}), {"Accept": "*/*"}),
    (
        "a header-bound argument with its matching Mcp-Param header",
        _call("leaky.route", {"region": "eu-west", "text": "hi"}),
        {"Mcp-Param-Region": "eu-west"},
    ),
]

LIST_ARGUMENTS = {
    **_call("leaky.echo", None),
    "params": {"name": "leaky.echo", "arguments": ["x"], "_meta": META},
}

# (label, body, header overrides, raw body) the SDK answers: the lean path must pass them on untouched.
PASSED_ON: list[tuple[str, dict[str, Any], dict[str, str], bytes | None]] = [
    (
        "progress token needs the SSE stream",
        _call("leaky.echo", {"text": "p"}, _meta={**META, "progressToken": "t1"}),
        {},
        None,
    ),
    (
        "Mcp-Name disagrees with the body",
        _call("leaky.echo", {"text": "x"}),
        {"Mcp-Name": "leaky.leak_env"},
        None,
    ),
    (
        "Mcp-Method disagrees with the body",
        _call("leaky.echo", {"text": "x"}),
        {"Mcp-Method": "tools/list"},
        None,
    ),
    ("foreign Host (DNS rebinding)", _call("leaky.echo", {"text": "x"}), {"Host": "evil.example:80"}, None),
    ("foreign Origin", _call("leaky.echo", {"text": "x"}), {"Origin": "http://evil.example"}, None),
    ("Accept without SSE", _call("leaky.echo", {"text": "x"}), {"Accept": "application/json"}, None),
    ("wrong Content-Type", _call("leaky.echo", {"text": "x"}), {"Content-Type": "text/plain"}, None),
    ("unknown params member", _call("leaky.echo", {"text": "x"}, task={"ttl": 1}), {}, None),
    (
        "arguments that are not an object",
        LIST_ARGUMENTS,
        {},
        None,
    ),
    (
        "unsupported envelope version",
        _call(
            "leaky.echo",
            {"text": "x"},
            _meta={**META, "io.modelcontextprotocol/protocolVersion": "2099-01-01"},
        ),
        {},
        None,
    ),
    ("boolean id", _call("leaky.echo", {"text": "x"}, request_id=True), {}, None),  # type: ignore[arg-type]
    ("a session header", _call("leaky.echo", {"text": "x"}), {"Mcp-Session-Id": "abc"}, None),
    (
        "another method",
        {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": META}},
        {"Mcp-Method": "tools/list", "Mcp-Name": ""},
        None,
    ),
    (
        "a body that is not JSON",
        _call("leaky.echo", {}),
        {},
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call"',
    ),
    ("a batch", _call("leaky.echo", {}), {}, json.dumps([_call("leaky.echo", {"text": "x"})]).encode()),
    (
        "an Mcp-Param header disagreeing with its bound argument",
        _call("leaky.route", {"region": "eu-west", "text": "hi"}),
        {"Mcp-Param-Region": "us-east"},
        None,
    ),
    (
        "a bound argument without its Mcp-Param header",
        _call("leaky.route", {"region": "eu-west", "text": "hi"}),
        {},
        None,
    ),
]


def _served(gw: RunningGateway) -> int:
    fast = gw.layer(FastToolCall)
    assert isinstance(fast, FastToolCall)
    return fast.served


def _post(
    gw: RunningGateway, body: dict[str, Any], overrides: dict[str, str], raw: bytes | None = None
) -> httpx.Response:
    headers = {**_headers(body), "Authorization": f"Bearer {gw.tokens['agent-a']}"}
    headers.update(overrides)
    headers = {k: v for k, v in headers.items() if v != ""}
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(gw.url, content=content, headers=headers, timeout=30)


def _answer(response: httpx.Response) -> tuple[int, str, Any]:
    kind = response.headers.get("content-type", "").split(";")[0]
    body: Any = response.json() if kind == "application/json" else response.text
    return response.status_code, kind, body


def _audit_shape(gw: RunningGateway, since: int) -> list[tuple[Any, ...]]:
    return [(r.kind, r.tool, r.decision, r.status, r.args) for r in gw.audit()[since:]]


@pytest.fixture
def pair(make_gateway: GatewayFactory, tmp_path: Path) -> tuple[RunningGateway, RunningGateway]:
    def build(name: str, fast: bool) -> RunningGateway:
        env = {"API_TOKEN": "secret://api-token"}
        return make_gateway(
            POLICY,
            name=name,
            secrets={"api-token": SECRET},
            upstreams={"leaky": leaky_stdio(tmp_path / f"{name}-calls.log", env)},
            server_options={"fast_path": fast},
            watch_policy=False,
        )

    return build("fast", True), build("sdk", False)


def test_the_lean_path_answers_and_audits_exactly_as_the_sdk_path(
    pair: tuple[RunningGateway, RunningGateway],
) -> None:
    fast, sdk = pair
    for label, body, overrides in SERVED:
        before = (_served(fast), len(fast.audit()), len(sdk.audit()))
        lean, reference = _answer(_post(fast, body, overrides)), _answer(_post(sdk, body, overrides))
        assert lean == reference, label
        assert _served(fast) == before[0] + 1, f"{label}: not served by the lean path"
        assert _audit_shape(fast, before[1]) == _audit_shape(sdk, before[2]), label
        assert _audit_shape(fast, before[1]), f"{label}: nothing audited"
    leaked = _answer(_post(fast, *SERVED[4][1:]))
    assert leaked[0] == 200 and SECRET not in json.dumps(leaked[2])


@pytest.mark.parametrize(
    ("label", "body", "overrides", "raw"), PASSED_ON, ids=[case[0] for case in PASSED_ON]
)
def test_requests_the_lean_path_must_not_serve_get_the_sdk_answer(
    pair: tuple[RunningGateway, RunningGateway],
    label: str,
    body: dict[str, Any],
    overrides: dict[str, str],
    raw: bytes | None,
) -> None:
    fast, sdk = pair
    before = _served(fast)
    lean, reference = _answer(_post(fast, body, overrides, raw)), _answer(_post(sdk, body, overrides, raw))
    assert lean == reference, label
    assert _served(fast) == before, f"{label}: the lean path answered it"


def test_a_forged_token_is_refused_before_the_lean_path_and_audited(
    pair: tuple[RunningGateway, RunningGateway],
) -> None:
    fast, _ = pair
    before, records = _served(fast), len(fast.audit())
    body = _call("leaky.echo", {"text": "hello"})
    response = _post(fast, body, {"Authorization": "Bearer mgw_forged_0000000000000000"})
    assert response.status_code == 401
    assert _served(fast) == before
    assert [r.kind for r in fast.audit()[records:]] == ["auth_failure"]


def test_the_per_call_tool_lookup_agrees_with_the_catalog(
    pair: tuple[RunningGateway, RunningGateway],
) -> None:
    gateway = pair[0].runtime.gateway
    catalog = gateway.catalog()
    assert any(spec.upstream for spec in catalog.values())  # upstream tools are in it
    names = [*catalog, "leaky.missing", "missing.echo", "nodot", "leaky."]
    assert {name: gateway.tool_spec(name) for name in names} == {name: catalog.get(name) for name in names}
