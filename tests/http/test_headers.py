"""Headers read once per request (``http/headers.py``) say what Starlette and the SDK would say."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.requests import Request

from conftest import GatewayFactory, grants_policy
from mcp_gateway.http.headers import accepts, headers_of, plainly_allowed, repeats
from mcp_gateway.http.reply import Reply
from mcp_gateway.http.session import _key

SETTINGS = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=["127.0.0.1:8000", "gw.example:*"],
    allowed_origins=["http://127.0.0.1:8000", "https://app.example:*"],
)
OFF = TransportSecuritySettings(enable_dns_rebinding_protection=False)


def _scope(headers: list[tuple[bytes, bytes]], method: str = "POST") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": "/mcp", "headers": headers}


GOOD = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")]
SECURITY_CASES = [
    GOOD,
    [*GOOD, (b"origin", b"http://127.0.0.1:8000")],
    [*GOOD, (b"origin", b"")],
    [(b"host", b"127.0.0.1:8000"), (b"content-type", b"Application/JSON; charset=utf-8")],
    [(b"host", b"127.0.0.1:8000"), (b"content-type", b"text/plain")],
    [(b"host", b"127.0.0.1:8000")],
    [(b"content-type", b"application/json")],
    [(b"host", b""), (b"content-type", b"application/json")],
    [(b"host", b"evil.example"), (b"content-type", b"application/json")],
    [(b"host", b"gw.example:9"), (b"content-type", b"application/json")],
    [*GOOD, (b"origin", b"http://evil.example")],
    [*GOOD, (b"origin", b"https://app.example:8443")],
    [(b"host", b"evil.example"), (b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")],
    [(b"host", b"127.0.0.1:8000"), (b"host", b"evil.example"), (b"content-type", b"application/json")],
]


@pytest.mark.anyio
@pytest.mark.parametrize("settings", [SETTINGS, OFF], ids=["protected", "unprotected"])
@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("headers", SECURITY_CASES)
async def test_the_fast_host_origin_check_lets_through_only_what_the_sdk_lets_through(
    settings: TransportSecuritySettings, method: str, headers: list[tuple[bytes, bytes]]
) -> None:
    scope = _scope(list(headers), method)
    sdk = await TransportSecurityMiddleware(settings).validate_request(
        Request(scope), is_post=method == "POST"
    )
    if plainly_allowed(settings, headers_of(scope), method == "POST"):
        assert sdk is None


def test_a_plain_request_needs_no_sdk_check() -> None:
    assert plainly_allowed(SETTINGS, headers_of(_scope(list(GOOD))), True)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"a", b"1"), (b"b", b"2")],
        [(b"a", b"1"), (b"a", b"2"), (b"b", b"3"), (b"a", b"4")],
        [(b"A", b"1"), (b"a", b"2")],
        [],
    ],
)
def test_each_header_reads_as_starlette_reads_it(headers: list[tuple[bytes, bytes]]) -> None:
    scope = _scope(headers)
    starlette = Headers(scope=_scope(list(headers)))
    found = headers_of(scope)
    for name in {k for k, _ in headers} | {b"missing"}:
        expected = starlette.get(name.decode())
        assert (found.get(name).decode() if name in found else None) == expected or name != name.lower()
    assert headers_of(scope) is found  # read once, then kept


def test_header_lines_given_as_a_tuple_are_read_as_a_list() -> None:
    scope = _scope([])
    scope["headers"] = ((b"a", b"1"),)
    assert headers_of(scope) == {b"a": b"1"} and scope["headers"] == [(b"a", b"1")]


@pytest.mark.parametrize(
    ("headers", "repeated"),
    [
        ([(b"mcp-method", b"x"), (b"host", b"h")], False),
        ([(b"mcp-method", b"x"), (b"mcp-method", b"x")], True),
        ([(b"mcp-method", b"x"), (b"Mcp-Method", b"x")], True),
    ],
)
def test_a_header_name_given_twice_is_noticed_whatever_its_case(
    headers: list[tuple[bytes, bytes]], repeated: bool
) -> None:
    scope = _scope(headers)
    assert repeats(scope, headers_of(scope)) is repeated


def _reference_accepts(value: str) -> tuple[bool, bool]:
    kinds = [part.split(";")[0].strip().lower() for part in value.split(",")]
    anything = "*/*" in kinds
    return (
        anything or "application/json" in kinds or "application/*" in kinds,
        anything or "text/event-stream" in kinds or "text/*" in kinds,
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "*/*",
        "application/json, text/event-stream",
        "Application/JSON;q=0.9 , TEXT/*",
        "application/json",
        "text/event-stream",
        "application/*",
        "text/html, image/png",
    ],
)
def test_accept_is_read_as_before_and_again_from_its_cache(value: str) -> None:
    assert accepts(value.encode()) == _reference_accepts(value)
    assert accepts(value.encode()) == _reference_accepts(value)


@pytest.mark.parametrize("request_id", [0, 7, -3, 10**40, "7", "", 'quo"te', "é\u2028", True, None, 1.0, [1]])
def test_a_session_keys_a_request_id_as_its_json_text(request_id: Any) -> None:
    assert _key(request_id) == json.dumps(request_id)


@pytest.mark.anyio
async def test_an_answer_finished_while_a_notification_is_sent_waits_for_it_and_ends_the_stream() -> None:
    sent: list[dict[str, Any]] = []
    release = anyio.Event()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message.get("more_body"):
            await release.wait()  # the notification's body is held on the wire

    reply = Reply(send, ping_after=None)
    async with anyio.create_task_group() as tg:
        tg.start_soon(reply.notify, {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}})
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(reply.finish, {"jsonrpc": "2.0", "id": 1, "result": {}})
        await anyio.wait_all_tasks_blocked()
        assert len(sent) == 2  # the stream's start and the notification; the answer waits
        release.set()
    assert [m.get("more_body") for m in sent[1:]] == [True, False]
    assert b'"id":1' in sent[-1]["body"]
    await reply.notify({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}})
    assert len(sent) == 3  # nothing after the answer


@pytest.mark.anyio
async def test_an_answer_with_nothing_before_it_goes_as_json_and_later_notifications_are_dropped() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    reply = Reply(send, ping_after=None)
    await reply.finish({"jsonrpc": "2.0", "id": 1, "result": {}})
    await reply.notify({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}})
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert (b"content-type", b"application/json") in sent[0]["headers"]


@pytest.mark.e2e
@pytest.mark.parametrize("second", ["Mcp-Method", "mcp-method"])
def test_a_routing_header_sent_twice_is_refused(make_gateway: GatewayFactory, second: str) -> None:
    gw = make_gateway(grants_policy({"agent-a": ["echo"]}))
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}}
    headers = [
        ("Authorization", f"Bearer {gw.tokens['agent-a']}"),
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/list"),
        (second, "tools/list"),
    ]
    response = httpx.post(gw.url, content=json.dumps(body).encode(), headers=headers, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == types.HEADER_MISMATCH
    assert error["message"] == "mcp-method header appears more than once"
