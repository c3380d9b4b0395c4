"""The lean tools/call path: what it sends, and how every kind of bad answer becomes an UpstreamError
(error mapping with httpx.MockTransport; the real path is exercised in tests/conformance and test_server)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from mcp_gateway.connectors.fast_http import FastToolCaller
from mcp_gateway.errors import UpstreamError

pytestmark = pytest.mark.anyio

SECRET_HEADER = {"Authorization": "Bearer upstream-credential-123"}


def _caller(handler: Any) -> FastToolCaller:
    return FastToolCaller(
        "up", "http://up.test/mcp", SECRET_HEADER, "2026-07-28", 5, transport=httpx.MockTransport(handler)
    )


async def test_a_call_is_one_self_contained_post_with_the_eras_headers_and_envelope() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": {"content": []}})

    caller = _caller(handler)
    assert await caller.call("echo", {"text": "hi"}) == {"content": []}
    await caller.aclose()
    request = seen[0]
    body = json.loads(request.content)
    assert request.headers["MCP-Protocol-Version"] == "2026-07-28"
    assert request.headers["Mcp-Method"] == "tools/call" and request.headers["Mcp-Name"] == "echo"
    assert request.headers["Authorization"] == SECRET_HEADER["Authorization"]
    assert body["params"]["arguments"] == {"text": "hi"}
    assert body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"


async def test_an_sse_answer_is_read_past_notifications_to_the_response() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        rid = json.loads(request.content)["id"]
        note = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
        answer = {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "ok"}]}}
        text = f"event: message\ndata: {json.dumps(note)}\n\nevent: message\ndata: {json.dumps(answer)}\n\n"
        return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})

    caller = _caller(handler)
    assert (await caller.call("echo", {}))["content"][0]["text"] == "ok"
    await caller.aclose()


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(500, text="boom"), "answered HTTP 500"),
        (httpx.Response(200, text="not json"), "answered garbage"),
        (httpx.Response(200, json=[1, 2]), "answered garbage"),
        (httpx.Response(200, json={"jsonrpc": "2.0", "id": 999, "result": {}}), "answered garbage"),
        (httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "result": "text"}), "answered garbage"),
        (
            httpx.Response(
                404, json={"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "no tool"}}
            ),
            "error -32602: no tool",
        ),
        (httpx.Response(200, text="data: {}\n\n", headers={"content-type": "text/event-stream"}), "garbage"),
    ],
)
async def test_bad_answers_become_upstream_errors_without_the_credential(
    response: httpx.Response, message: str
) -> None:
    caller = _caller(lambda request: response)
    with pytest.raises(UpstreamError, match=message) as caught:
        await caller.call("echo", {})
    await caller.aclose()
    assert "upstream-credential-123" not in str(caught.value)


async def test_a_network_failure_is_an_upstream_error_naming_no_url_secret() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused to http://up.test/mcp?key=hunter2", request=request)

    caller = _caller(handler)
    with pytest.raises(UpstreamError, match="failed: ConnectError") as caught:
        await caller.call("echo", {})
    await caller.aclose()
    assert "hunter2" not in str(caught.value)
