"""The lean ``tools/call`` path inside a 2025-11-25 session answers exactly as the SDK's session does,
only for sessions and requests it may serve, relays the upstream's log messages, and honours a
client's cancellation.

Two gateways with the same policy and upstream, one with ``server.fast_path: false``, each get a raw
session (``initialize``, ``notifications/initialized``) and the same raw requests on it. The SDK
answers a session's POST with SSE, the lean path with JSON unless it has something to stream (both
are 2025-11-25 wire forms), so answers are compared as the JSON-RPC messages they carry.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import CONSTRAINED_ECHO, GatewayFactory, RunningGateway, grants_policy, leaky_stdio, wait_until
from mcp_gateway.http.lean import FastToolCall

POLICY = grants_policy(
    {
        "agent-a": [CONSTRAINED_ECHO, "leaky.leak_env", "leaky.log_env", "leaky.sleep"],
        "agent-b": ["leaky.echo"],
    }
)

SECRET = "tok-ABCDEF-0123456789-secret"
VERSION = "2025-11-25"
ACCEPT = "application/json, text/event-stream"


def _call(
    name: str, arguments: dict[str, Any] | None, request_id: int | str = 1, **params: Any
) -> dict[str, Any]:
    body_params: dict[str, Any] = {"name": name, **params}
    if arguments is not None:
        body_params["arguments"] = arguments
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": body_params}


SERVED: list[tuple[str, dict[str, Any]]] = [
    ("allowed upstream call", _call("leaky.echo", {"text": "hello"})),
    ("string id, no arguments member", _call("leaky.echo", None, request_id="req-7")),
    ("constraint denial is an error result", _call("leaky.echo", {"text": "forbidden"})),
    ("ungranted tool is a JSON-RPC error", _call("leaky.drop_everything", {})),
    ("upstream echo of a vault secret is redacted", _call("leaky.leak_env", {"var": "API_TOKEN"})),
]

# (label, body, header overrides) that the SDK must answer.
PASSED_ON: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("progress token", _call("leaky.echo", {"text": "p"}, _meta={"progressToken": "t1"}), {}),
    ("no protocol version header", _call("leaky.echo", {"text": "x"}), {"MCP-Protocol-Version": ""}),
    (
        "another version than negotiated",
        _call("leaky.echo", {"text": "x"}),
        {"MCP-Protocol-Version": "2025-06-18"},
    ),
    ("unknown session", _call("leaky.echo", {"text": "x"}), {"Mcp-Session-Id": "0" * 32}),
    ("unknown params member", _call("leaky.echo", {"text": "x"}, task={"ttl": 1}), {}),
    ("another method", {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, {}),
    ("foreign Origin", _call("leaky.echo", {"text": "x"}), {"Origin": "http://evil.example"}),
    ("Accept without SSE", _call("leaky.echo", {"text": "x"}), {"Accept": "application/json"}),
    ("wrong Content-Type", _call("leaky.echo", {"text": "x"}), {"Content-Type": "text/plain"}),
    ("foreign Host (DNS rebinding)", _call("leaky.echo", {"text": "x"}), {"Host": "evil.example:80"}),
]


def _served(gw: RunningGateway) -> int:
    fast = gw.layer(FastToolCall)
    assert isinstance(fast, FastToolCall)
    return fast.served


def _headers(token: str, session: str | None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}", "Accept": ACCEPT, "Content-Type": "application/json"}
    if session is not None:
        headers |= {"Mcp-Session-Id": session, "MCP-Protocol-Version": VERSION}
    return headers


def open_session(gw: RunningGateway, agent: str = "agent-a", *, handshake: bool = True) -> str:
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": VERSION,
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }
    opened = httpx.post(gw.url, json=initialize, headers=_headers(gw.tokens[agent], None), timeout=30)
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    if handshake:
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        done = httpx.post(gw.url, json=note, headers=_headers(gw.tokens[agent], session), timeout=30)
        assert done.status_code == 202
    return session


def post(
    gw: RunningGateway, session: str, body: dict[str, Any], overrides: dict[str, str] | None = None
) -> httpx.Response:
    headers = _headers(gw.tokens["agent-a"], session) | (overrides or {})
    headers = {k: v for k, v in headers.items() if v != ""}
    return httpx.post(gw.url, content=json.dumps(body).encode(), headers=headers, timeout=30)


def messages(response: httpx.Response) -> tuple[int, list[Any]]:
    """The status and the JSON-RPC messages of a JSON or SSE answer."""
    kind = response.headers.get("content-type", "").split(";")[0]
    if kind == "text/event-stream":
        found = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
        return response.status_code, [m for m in found if m]  # the SDK's priming event has no data
    if kind == "application/json":
        return response.status_code, [response.json()]
    return response.status_code, [response.text]


def _audit_shape(gw: RunningGateway, since: int) -> list[tuple[Any, ...]]:
    return [(r.kind, r.tool, r.decision, r.status, r.args) for r in gw.audit()[since:]]


@pytest.fixture
def pair(make_gateway: GatewayFactory, tmp_path: Path) -> tuple[RunningGateway, RunningGateway]:
    def build(name: str, fast: bool) -> RunningGateway:
        upstream = leaky_stdio(tmp_path / f"{name}-calls.log", {"API_TOKEN": "secret://api-token"})
        upstream["protocol"] = "legacy"  # log messages reach the gateway on the upstream's session
        return make_gateway(
            POLICY,
            name=name,
            agents=["agent-a", "agent-b"],
            secrets={"api-token": SECRET},
            upstreams={"leaky": upstream},
            server_options={"fast_path": fast},
            watch_policy=False,
        )

    return build("fast", True), build("sdk", False)


def test_calls_in_a_session_are_answered_and_audited_exactly_as_the_sdk_session_does(
    pair: tuple[RunningGateway, RunningGateway],
) -> None:
    fast, sdk = pair
    sessions = open_session(fast), open_session(sdk)
    for label, body in SERVED:
        before = (_served(fast), len(fast.audit()), len(sdk.audit()))
        lean, reference = post(fast, sessions[0], body), post(sdk, sessions[1], body)
        assert messages(lean) == messages(reference), label
        assert lean.headers["mcp-session-id"] == sessions[0], label
        assert _served(fast) == before[0] + 1, f"{label}: not served by the lean path"
        assert _audit_shape(fast, before[1]) == _audit_shape(sdk, before[2]), label
        assert _audit_shape(fast, before[1]), f"{label}: nothing audited"
    leaked = messages(post(fast, sessions[0], SERVED[4][1]))
    assert leaked[0] == 200 and "leak_env" not in str(leaked) and SECRET not in json.dumps(leaked[1])


@pytest.mark.parametrize(("label", "body", "overrides"), PASSED_ON, ids=[case[0] for case in PASSED_ON])
def test_requests_the_lean_path_must_not_serve_get_the_sdk_sessions_answer(
    pair: tuple[RunningGateway, RunningGateway], label: str, body: dict[str, Any], overrides: dict[str, str]
) -> None:
    fast, sdk = pair
    sessions = open_session(fast), open_session(sdk)
    before = _served(fast)
    lean = post(fast, sessions[0], body, overrides)
    reference = post(sdk, sessions[1], body, overrides)
    assert messages(lean) == messages(reference), label
    assert _served(fast) == before, f"{label}: the lean path answered it"


def test_another_credentials_session_is_refused_by_the_sdk_and_audited(
    pair: tuple[RunningGateway, RunningGateway],
) -> None:
    fast, _ = pair
    session = open_session(fast, "agent-b")
    before, records = _served(fast), len(fast.audit())
    refused = post(fast, session, _call("leaky.echo", {"text": "hijack"}))
    assert refused.status_code == 404 and _served(fast) == before
    assert [r.status for r in fast.audit()[records:]] == ["session_refused"]


def test_a_session_is_served_only_once_the_sdk_has_seen_it_after_the_handshake(
    pair: tuple[RunningGateway, RunningGateway],
) -> None:
    fast, _ = pair
    session = open_session(fast, handshake=False)
    before = _served(fast)
    first = post(fast, session, _call("leaky.echo", {"text": "one"}))
    second = post(fast, session, _call("leaky.echo", {"text": "two"}, request_id=2))
    assert messages(first)[0] == messages(second)[0] == 200
    assert _served(fast) == before + 1  # the SDK served the first and so learned the session
    closed = httpx.delete(fast.url, headers=_headers(fast.tokens["agent-a"], session), timeout=30)
    assert closed.status_code == 200
    gone = post(fast, session, _call("leaky.echo", {"text": "three"}, request_id=3))
    assert gone.status_code == 404 and _served(fast) == before + 1


def test_upstream_log_messages_stream_to_the_caller_scrubbed_before_the_result(
    pair: tuple[RunningGateway, RunningGateway],
) -> None:
    fast, sdk = pair
    body = _call("leaky.log_env", {"var": "API_TOKEN"})
    before = _served(fast)
    lean = post(fast, open_session(fast), body)
    reference = post(sdk, open_session(sdk), body)
    assert lean.headers["content-type"].startswith("text/event-stream") and _served(fast) == before + 1
    assert messages(lean) == messages(reference)
    _, sent = messages(lean)
    assert [m.get("method", "result" in m) for m in sent] == ["notifications/message", True]
    assert SECRET not in lean.text and "API_TOKEN is" in sent[0]["params"]["data"]


def test_a_cancelled_call_ends_with_the_sdks_cancel_error_and_a_cancelled_outcome(
    pair: tuple[RunningGateway, RunningGateway], tmp_path: Path
) -> None:
    fast, _ = pair
    call_log = tmp_path / "fast-calls.log"
    session = open_session(fast)
    before, records = _served(fast), len(fast.audit())
    answer: list[httpx.Response] = []
    caller = threading.Thread(
        target=lambda: answer.append(
            post(fast, session, _call("leaky.sleep", {"seconds": 30}, request_id=41))
        )
    )
    caller.start()
    wait_until(lambda: call_log.exists() and "sleep" in call_log.read_text(), 20, "the upstream call")
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 41}}
    assert post(fast, session, cancel).status_code == 202
    caller.join(20)
    assert not caller.is_alive() and _served(fast) == before + 1
    assert messages(answer[0]) == (
        200,
        [{"jsonrpc": "2.0", "id": 41, "error": {"code": -32800, "message": "Request cancelled"}}],
    )
    assert [(r.kind, r.status) for r in fast.audit()[records:]] == [("intent", ""), ("outcome", "cancelled")]
