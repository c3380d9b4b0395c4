"""The gateway's own 2026-07-28 dispatch answers as a bare SDK server does, where the spec fixes it.

A bare MCP SDK server (``sdk_front.py``: the SDK's transport and low-level server, no governance) and
the gateway stand in front of the same upstream, the gateway offering its tools unprefixed. Both get
the same raw requests; status, content type and JSON body must be equal: byte for byte for a plain
call's answer (the two servers share name and version, so the ``serverInfo`` stamp agrees) and for
every transport or protocol rejection. The gateway's own answers that differ by design (a policy
denial, a redacted secret, its capabilities) are tested elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sdk_front import SdkFront

from conftest import GatewayFactory, RunningGateway, grants_policy, leaky_stdio
from mcp_gateway.http.modern import EraRouter, ModernDoor

pytestmark = pytest.mark.e2e

POLICY = grants_policy({"agent-a": ["echo", "route", "sleep"]})
VERSION = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": VERSION,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "1"},
}


def _request(method: str, params: dict[str, Any] | None = None, request_id: Any = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": method,
        "params": {"_meta": dict(META), **(params or {})},
    }


def _call(name: str, arguments: dict[str, Any] | None, request_id: Any = 1, **params: Any) -> dict[str, Any]:
    body = _request("tools/call", {"name": name, **params}, request_id)
    if arguments is not None:
        body["params"]["arguments"] = arguments
    return body


ROUTE = _call("route", {"region": "eu-west", "text": "hi"})
LIST_ARGUMENTS = _call("echo", None)
LIST_ARGUMENTS["params"]["arguments"] = ["x"]

# (label, body, header overrides, raw body); "" removes a header.
CASES: list[tuple[str, dict[str, Any], dict[str, str], bytes | None]] = [
    ("a plain call", _call("echo", {"text": "hello"}), {}, None),
    ("a string id", _call("echo", {"text": "x"}, request_id="req-7"), {}, None),
    ("an upstream's error result", _call("echo", None), {}, None),
    ("an Accept wildcard", _call("echo", {"text": "hi"}), {"Accept": "*/*"}, None),
    ("a bound argument with its header", ROUTE, {"Mcp-Param-Region": "eu-west"}, None),
    (
        "a progress token nobody reports to",
        _call("echo", {"text": "p"}, _meta={**META, "progressToken": 1}),
        {},
        None,
    ),
    ("ping, which the era does not define", _request("ping"), {"Mcp-Method": "ping"}, None),
    ("Mcp-Name disagrees with the body", _call("echo", {"text": "x"}), {"Mcp-Name": "route"}, None),
    ("Mcp-Method disagrees with the body", _call("echo", {"text": "x"}), {"Mcp-Method": "tools/list"}, None),
    ("no Mcp-Method", _call("echo", {"text": "x"}), {"Mcp-Method": ""}, None),
    ("foreign Host (DNS rebinding)", _call("echo", {"text": "x"}), {"Host": "evil.example:80"}, None),
    ("foreign Origin", _call("echo", {"text": "x"}), {"Origin": "http://evil.example"}, None),
    ("Accept without SSE", _call("echo", {"text": "x"}), {"Accept": "application/json"}, None),
    ("wrong Content-Type", _call("echo", {"text": "x"}), {"Content-Type": "text/plain"}, None),
    ("unknown params member", _call("echo", {"text": "x"}, task={"ttl": 1}), {}, None),
    ("arguments that are not an object", LIST_ARGUMENTS, {}, None),
    (
        "unsupported envelope version",
        _call("echo", {"text": "x"}, _meta={**META, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}),
        {},
        None,
    ),
    (
        "unsupported header version",
        _call("echo", {"text": "x"}),
        {"MCP-Protocol-Version": "2099-01-01"},
        None,
    ),
    (
        "no envelope",
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}},
        {},
        None,
    ),
    ("boolean id", _call("echo", {"text": "x"}, request_id=True), {}, None),
    ("a body that is not JSON", _call("echo", {}), {}, b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call"'),
    ("a batch", _call("echo", {}), {}, json.dumps([_call("echo", {"text": "x"})]).encode()),
    ("a posted response", _call("echo", {}), {}, b'{"jsonrpc": "2.0", "id": 1, "result": {}}'),
    (
        "a notification",
        _call("echo", {}),
        {"Mcp-Method": "notifications/cancelled"},
        json.dumps(
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
        ).encode(),
    ),
    ("a header disagreeing with its bound argument", ROUTE, {"Mcp-Param-Region": "us-east"}, None),
    ("a bound argument without its header", ROUTE, {}, None),
    (
        "a handshake-era method",
        _request("logging/setLevel", {"level": "info"}),
        {"Mcp-Method": "logging/setLevel"},
        None,
    ),
    ("an unknown method", _request("tools/destroy"), {"Mcp-Method": "tools/destroy"}, None),
    ("a body over the limit", _call("echo", {"text": "x" * 5_000_000}), {}, None),
]


def _headers(body: dict[str, Any]) -> dict[str, str]:
    params = body.get("params") or {}
    return {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": VERSION,
        "Mcp-Method": str(body.get("method", "")),
        "Mcp-Name": str(params.get("name", "")) if body.get("method") == "tools/call" else "",
    }


def _post(
    url: str, body: dict[str, Any], overrides: dict[str, str], raw: bytes | None, token: str = ""
) -> httpx.Response:
    headers = {**_headers(body), **overrides}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    headers = {k: v for k, v in headers.items() if v != ""}
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(url, content=content, headers=headers, timeout=30)


def _door(gw: RunningGateway) -> ModernDoor:
    door = gw.layer(EraRouter).modern
    assert isinstance(door, ModernDoor)
    return door


def _answer(response: httpx.Response) -> tuple[int, str, Any]:
    kind = response.headers.get("content-type", "").split(";")[0]
    body: Any = response.json() if kind == "application/json" else response.text
    return response.status_code, kind, body


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, SdkFront]]:
    from conftest import gateways

    tmp = tmp_path_factory.mktemp("modern")
    upstream = leaky_stdio(tmp / "calls.log")
    with gateways(tmp) as make_gateway:
        gw = make_gateway(POLICY, upstreams={"leaky": {**upstream, "prefix": ""}}, watch_policy=False)
        with SdkFront(upstream["command"], upstream["args"], upstream["env"]).serve() as front:
            yield gw, front


@pytest.mark.parametrize(("label", "body", "overrides", "raw"), CASES, ids=[case[0] for case in CASES])
def test_the_gateway_answers_as_a_bare_sdk_server_where_the_spec_fixes_the_answer(
    pair: tuple[RunningGateway, SdkFront],
    label: str,
    body: dict[str, Any],
    overrides: dict[str, str],
    raw: bytes | None,
) -> None:
    gw, front = pair
    door = _door(gw)
    before = door.served
    ours = _answer(_post(gw.url, body, overrides, raw, gw.tokens["agent-a"]))
    reference = _answer(_post(front.url, body, overrides, raw))
    assert ours == reference, label
    assert door.served in (before, before + 1)


def test_discovery_names_the_versions_and_the_server_as_the_sdk_does(
    pair: tuple[RunningGateway, SdkFront],
) -> None:
    gw, front = pair
    body = _request("server/discover")
    overrides = {"Mcp-Method": "server/discover"}
    ours = _post(gw.url, body, overrides, None, gw.tokens["agent-a"]).json()["result"]
    reference = _post(front.url, body, overrides, None).json()["result"]
    for key in ("supportedVersions", "resultType", "instructions", "_meta"):
        assert ours[key] == reference[key], key
    # What differs by design: the gateway announces tool-list changes (subscriptions/listen).
    assert ours["capabilities"]["tools"] == {"listChanged": True}


def test_the_sdk_server_is_not_on_the_2026_path(pair: tuple[RunningGateway, SdkFront]) -> None:
    gw, _ = pair
    door = _door(gw)
    before = door.served
    for body in (_call("echo", {"text": "a"}), _request("tools/list"), _request("server/discover")):
        response = _post(gw.url, body, {"Mcp-Method": body["method"]}, None, gw.tokens["agent-a"])
        assert response.status_code == 200, response.text
    assert door.served == before + 3


def test_a_forged_token_is_refused_before_dispatch_and_audited(
    pair: tuple[RunningGateway, SdkFront],
) -> None:
    gw, _ = pair
    door = _door(gw)
    before, records = door.served, len(gw.audit())
    response = _post(gw.url, _call("echo", {"text": "x"}), {}, None, "mgw_forged_0000000000000000")
    assert response.status_code == 401
    assert "resource_metadata=" in response.headers["www-authenticate"]
    assert door.served == before
    assert [r.kind for r in gw.audit()[records:]] == ["auth_failure"]


def test_an_opted_in_log_message_streams_before_the_answer_and_is_scrubbed(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    secret = "tok-ABCDEF-0123456789-secret"
    upstream = leaky_stdio(tmp_path / "calls.log", {"API_TOKEN": "secret://api-token"})
    gw = make_gateway(
        grants_policy({"agent-a": ["leaky.log_env"]}),
        secrets={"api-token": secret},
        upstreams={"leaky": upstream},
    )
    meta = {**META, "io.modelcontextprotocol/logLevel": "debug"}
    body = _call("leaky.log_env", {"var": "API_TOKEN"}, _meta=meta)
    response = _post(gw.url, body, {}, None, gw.tokens["agent-a"])
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    assert [e.get("method") for e in events[:-1]] and all(
        e["method"] == "notifications/message" for e in events[:-1]
    )
    assert events[-1]["id"] == 1 and "result" in events[-1]
    assert secret not in response.text
    # Without the opt-in nothing is streamed: the answer is JSON.
    plain = _post(gw.url, _call("leaky.log_env", {"var": "API_TOKEN"}), {}, None, gw.tokens["agent-a"])
    assert plain.headers["content-type"].startswith("application/json")


def test_the_per_call_tool_lookup_agrees_with_the_catalog(pair: tuple[RunningGateway, SdkFront]) -> None:
    gateway = pair[0].runtime.gateway
    catalog = gateway.catalog()
    assert any(spec.upstream for spec in catalog.values())  # upstream tools are in it
    names = [*catalog, "leaky.echo", "missing", "leaky.", ""]
    assert {name: gateway.tool_spec(name) for name in names} == {name: catalog.get(name) for name in names}
