"""2025-11-25 sessions on the gateway's own dispatch: answers equal to a bare SDK server's where the spec
fixes them, sessions bound to their credential, ended by DELETE or idle time, one GET stream each, and
a request cancelled by ``notifications/cancelled`` or by its client's disconnect.

The bare SDK server (``sdk_front.py``) and the gateway (its upstream's tools unprefixed) stand in front
of the same upstream; each gets a raw session and the same raw requests. The SDK answers a session's
POST with SSE, the gateway with JSON unless it has something to stream (both are 2025-11-25 wire
forms), so answers are compared as the JSON-RPC messages they carry.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sdk_front import SdkFront

from conftest import GatewayFactory, RunningGateway, grants_policy, leaky_stdio, wait_until
from mcp_gateway.http.legacy import LegacyDoor
from mcp_gateway.http.modern import EraRouter

pytestmark = pytest.mark.e2e

POLICY = grants_policy({"agent-a": ["echo", "leak_env", "log_env", "sleep"], "agent-b": ["echo"]})
SLEEPER = grants_policy({"agent-a": ["leaky.sleep"]})
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


# (label, body, header overrides): the answer is the same from both.
SAME: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("a plain call", _call("echo", {"text": "hello"}), {}),
    ("a string id, no arguments member", _call("echo", None, request_id="req-7"), {}),
    ("a progress token nobody reports to", _call("echo", {"text": "p"}, _meta={"progressToken": "t1"}), {}),
    ("no protocol version header", _call("echo", {"text": "x"}), {"MCP-Protocol-Version": ""}),
    ("another handshake version", _call("echo", {"text": "x"}), {"MCP-Protocol-Version": "2025-06-18"}),
    ("ping", {"jsonrpc": "2.0", "id": 5, "method": "ping"}, {}),
    ("an unknown method", {"jsonrpc": "2.0", "id": 6, "method": "tools/destroy"}, {}),
    ("a method of the other era", {"jsonrpc": "2.0", "id": 7, "method": "server/discover"}, {}),
    ("malformed params", {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": 3}}, {}),
    ("an unknown session", _call("echo", {"text": "x"}), {"Mcp-Session-Id": "0" * 32}),
    ("no session", _call("echo", {"text": "x"}), {"Mcp-Session-Id": ""}),
    ("foreign Origin", _call("echo", {"text": "x"}), {"Origin": "http://evil.example"}),
    ("Accept without SSE", _call("echo", {"text": "x"}), {"Accept": "application/json"}),
    ("wrong Content-Type", _call("echo", {"text": "x"}), {"Content-Type": "text/plain"}),
    ("foreign Host (DNS rebinding)", _call("echo", {"text": "x"}), {"Host": "evil.example:80"}),
    ("a notification", {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}, {}),
]


def _headers(token: str, session: str | None) -> dict[str, str]:
    headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if session is not None:
        headers |= {"Mcp-Session-Id": session, "MCP-Protocol-Version": VERSION}
    return headers


def open_session(url: str, token: str) -> str:
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
    opened = httpx.post(url, json=initialize, headers=_headers(token, None), timeout=30)
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert httpx.post(url, json=note, headers=_headers(token, session), timeout=30).status_code == 202
    return session


def post(
    url: str, token: str, session: str, body: dict[str, Any], overrides: dict[str, str] | None = None
) -> httpx.Response:
    headers = _headers(token, session) | (overrides or {})
    headers = {k: v for k, v in headers.items() if v != ""}
    return httpx.post(url, content=json.dumps(body).encode(), headers=headers, timeout=30)


def messages(response: httpx.Response) -> tuple[int, list[Any]]:
    """The status and the JSON-RPC messages of a JSON or SSE answer."""
    kind = response.headers.get("content-type", "").split(";")[0]
    if kind == "text/event-stream":
        found = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
        return response.status_code, [m for m in found if m]
    if kind == "application/json" and response.content:
        return response.status_code, [response.json()]
    return response.status_code, [response.text]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, SdkFront]]:
    from conftest import gateways

    tmp = tmp_path_factory.mktemp("sessions")
    upstream = leaky_stdio(tmp / "calls.log", {"API_TOKEN": "secret://api-token"})
    # Log messages reach the gateway on the upstream's session.
    served = {**upstream, "protocol": "legacy", "prefix": ""}
    with gateways(tmp) as make_gateway:
        gw = make_gateway(
            POLICY,
            agents=("agent-a", "agent-b"),
            secrets={"api-token": SECRET},
            upstreams={"leaky": served},
            watch_policy=False,
        )
        with SdkFront(upstream["command"], upstream["args"], upstream["env"]).serve() as front:
            yield gw, front


def _door(gw: RunningGateway) -> LegacyDoor:
    door = gw.layer(EraRouter).app
    assert isinstance(door, LegacyDoor)
    return door


@pytest.mark.parametrize(("label", "body", "overrides"), SAME, ids=[case[0] for case in SAME])
def test_a_session_is_answered_as_a_bare_sdk_servers_where_the_spec_fixes_the_answer(
    pair: tuple[RunningGateway, SdkFront], label: str, body: dict[str, Any], overrides: dict[str, str]
) -> None:
    gw, front = pair
    token = gw.tokens["agent-a"]
    ours = post(gw.url, token, open_session(gw.url, token), body, overrides)
    reference = post(front.url, "", open_session(front.url, ""), body, overrides)
    assert messages(ours) == messages(reference), label


def test_a_body_that_is_not_json_is_refused_as_the_sdk_refuses_it(
    pair: tuple[RunningGateway, SdkFront],
) -> None:
    gw, front = pair
    token = gw.tokens["agent-a"]
    broken = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call"'
    answers = []
    for url, key in ((gw.url, token), (front.url, "")):
        headers = _headers(key, open_session(url, key))
        answers.append(httpx.post(url, content=broken, headers=headers, timeout=30))
    assert [(a.status_code, a.json()["error"]["code"]) for a in answers] == [(400, -32700)] * 2


def test_another_credentials_session_is_refused_and_audited(pair: tuple[RunningGateway, SdkFront]) -> None:
    gw, _ = pair
    session = open_session(gw.url, gw.tokens["agent-b"])
    records = len(gw.audit())
    refused = post(gw.url, gw.tokens["agent-a"], session, _call("echo", {"text": "hijack"}))
    assert refused.status_code == 404
    assert [r.status for r in gw.audit()[records:]] == ["session_refused"]


def test_delete_ends_a_session_and_its_id_is_refused_after(pair: tuple[RunningGateway, SdkFront]) -> None:
    gw, _ = pair
    token = gw.tokens["agent-a"]
    session = open_session(gw.url, token)
    assert post(gw.url, token, session, _call("echo", {"text": "one"})).status_code == 200
    closed = httpx.delete(gw.url, headers=_headers(token, session), timeout=30)
    assert closed.status_code == 200
    assert post(gw.url, token, session, _call("echo", {"text": "two"})).status_code == 404
    assert httpx.delete(gw.url, headers=_headers(token, session), timeout=30).status_code == 404


def test_an_idle_session_expires(pair: tuple[RunningGateway, SdkFront]) -> None:
    gw, _ = pair
    table = _door(gw).sessions
    token = gw.tokens["agent-a"]
    kept = table.idle_timeout
    table.idle_timeout = 0.3
    try:
        session = open_session(gw.url, token)
        wait_until(lambda: session not in table, 10, "the session's idle expiry")
    finally:
        table.idle_timeout = kept
    assert post(gw.url, token, session, _call("echo", {"text": "x"})).status_code == 404


def test_a_session_has_one_get_stream_and_delete_ends_it(pair: tuple[RunningGateway, SdkFront]) -> None:
    gw, _ = pair
    token = gw.tokens["agent-a"]
    session = open_session(gw.url, token)
    headers = _headers(token, session)
    with httpx.Client(timeout=30) as client, client.stream("GET", gw.url, headers=headers) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        second = httpx.get(gw.url, headers=headers, timeout=30)
        assert second.status_code == 409
        assert httpx.delete(gw.url, headers=headers, timeout=30).status_code == 200
        assert list(stream.iter_raw()) in ([], [b""])  # the stream ends with the session


def test_log_messages_stream_to_the_caller_scrubbed_before_the_result(
    pair: tuple[RunningGateway, SdkFront],
) -> None:
    gw, _ = pair
    token = gw.tokens["agent-a"]
    answer = post(gw.url, token, open_session(gw.url, token), _call("log_env", {"var": "API_TOKEN"}))
    assert answer.headers["content-type"].startswith("text/event-stream")
    _, sent = messages(answer)
    assert [m.get("method", "result" in m) for m in sent] == ["notifications/message", True]
    assert SECRET not in answer.text and "API_TOKEN is" in sent[0]["params"]["data"]


def test_a_cancelled_call_ends_with_the_cancel_error_and_a_cancelled_outcome(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = make_gateway(SLEEPER, watch_policy=False)
    token = gw.tokens["agent-a"]
    session = open_session(gw.url, token)
    records = len(gw.audit())
    answer: list[httpx.Response] = []
    caller = threading.Thread(
        target=lambda: answer.append(post(gw.url, token, session, _call("leaky.sleep", {"seconds": 30}, 41)))
    )
    caller.start()
    wait_until(lambda: gw.call_log.exists() and "sleep" in gw.call_log.read_text(), 20, "the upstream call")
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 41}}
    assert post(gw.url, token, session, cancel).status_code == 202
    caller.join(20)
    assert not caller.is_alive()
    assert messages(answer[0]) == (
        200,
        [{"jsonrpc": "2.0", "id": 41, "error": {"code": -32800, "message": "Request cancelled"}}],
    )
    assert [(r.kind, r.status) for r in gw.audit()[records:]] == [("intent", ""), ("outcome", "cancelled")]


def test_a_session_client_that_disconnects_cancels_its_call_and_the_outcome_says_cancelled(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(SLEEPER, watch_policy=False)
    token = gw.tokens["agent-a"]
    session = open_session(gw.url, token)
    body = json.dumps(_call("leaky.sleep", {"seconds": 60}, 9)).encode()
    port = int(gw.base.rsplit(":", 1)[1])
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nAccept: {ACCEPT}\r\nMcp-Session-Id: {session}\r\n"
        f"MCP-Protocol-Version: {VERSION}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head + body)
        wait_until(
            lambda: gw.call_log.exists() and "sleep" in gw.call_log.read_text(), 20, "the upstream call"
        )
    outcomes = lambda: [r.status for r in gw.audit() if r.tool == "leaky.sleep" and r.kind == "outcome"]  # noqa: E731
    wait_until(lambda: outcomes() != [], 20, "the call's outcome")
    assert outcomes() == ["cancelled"]
