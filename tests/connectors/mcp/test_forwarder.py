"""The lean tools/call path against a real HTTP server: what it sends, and how every kind of bad
answer becomes an UpstreamError without the credential (the end-to-end path through the gateway is
in tests/conformance/test_federation_gating.py and tests/test_server.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from conftest import free_port
from mcp_gateway.connectors.mcp.forwarder import FastToolCaller
from mcp_gateway.demo.emulators import serve_in_thread
from mcp_gateway.errors import UpstreamError

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

CREDENTIAL = "upstream-credential-123"
Answer = Callable[[dict[str, Any]], Response]


class Upstream:
    """A stand-in upstream whose next answer each test chooses; it records what it received."""

    def __init__(self) -> None:
        self.answer: Answer = lambda body: JSONResponse(
            {"jsonrpc": "2.0", "id": body["id"], "result": {"resultType": "complete", "content": []}}
        )
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def handle(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.requests.append((dict(request.headers), body))
        return self.answer(body)


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[Upstream, str]]:
    state = Upstream()
    server = serve_in_thread(Starlette(routes=[Route("/mcp", state.handle, methods=["POST"])]), free_port())
    yield state, f"{server.url}/mcp"
    server.stop()


def _caller(url: str) -> FastToolCaller:
    return FastToolCaller(
        "up", url, {"Authorization": f"Bearer {CREDENTIAL}"}, "2026-07-28", 5, allow_private_network=True
    )


async def test_a_call_is_one_self_contained_post_with_the_eras_headers_and_envelope(
    upstream: tuple[Upstream, str],
) -> None:
    state, url = upstream
    state.answer = lambda body: JSONResponse(
        {"jsonrpc": "2.0", "id": body["id"], "result": {"resultType": "complete", "content": []}}
    )
    caller = _caller(url)
    assert await caller.call("echo", {"text": "hi"}) == {"resultType": "complete", "content": []}
    await caller.aclose()
    headers, body = state.requests[-1]
    assert headers["mcp-protocol-version"] == "2026-07-28"
    assert headers["mcp-method"] == "tools/call" and headers["mcp-name"] == "echo"
    assert headers["authorization"] == f"Bearer {CREDENTIAL}"
    assert body["params"]["arguments"] == {"text": "hi"}
    assert body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"


async def test_an_sse_answer_is_read_past_notifications_to_the_response(
    upstream: tuple[Upstream, str],
) -> None:
    state, url = upstream

    def sse(body: dict[str, Any]) -> Response:
        note = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
        result = {"resultType": "complete", "content": [{"type": "text", "text": "ok"}]}
        answer = {"jsonrpc": "2.0", "id": body["id"], "result": result}
        text = f"event: message\ndata: {json.dumps(note)}\n\nevent: message\ndata: {json.dumps(answer)}\n\n"
        return Response(text, media_type="text/event-stream")

    state.answer = sse
    caller = _caller(url)
    assert (await caller.call("echo", {}))["content"][0]["text"] == "ok"
    await caller.aclose()


BAD_ANSWERS: list[tuple[Answer, str]] = [
    (lambda body: PlainTextResponse("boom", status_code=500), "answered HTTP 500"),
    (lambda body: PlainTextResponse("not json"), "answered garbage"),
    (lambda body: JSONResponse([1, 2]), "answered garbage"),
    (lambda body: JSONResponse({"jsonrpc": "2.0", "id": 999, "result": {}}), "answered garbage"),
    (lambda body: JSONResponse({"jsonrpc": "2.0", "id": body["id"], "result": "text"}), "answered garbage"),
    (
        lambda body: JSONResponse({"jsonrpc": "2.0", "id": body["id"], "result": {"content": []}}),
        "answered garbage",
    ),
    (
        lambda body: JSONResponse(
            {"jsonrpc": "2.0", "id": body["id"], "error": {"code": -32602, "message": "no tool"}},
            status_code=404,
        ),
        "error -32602: no tool",
    ),
    (lambda body: Response("data: {}\n\n", media_type="text/event-stream"), "garbage"),
    # Valid JSON nested past what the parser recurses into.
    (lambda body: Response("[" * 100_000 + "]" * 100_000, media_type="application/json"), "answered garbage"),
    (lambda body: Response("[" * 100_000 + "]" * 100_000, status_code=500), "answered HTTP 500"),
    (lambda body: Response(status_code=307, headers={"location": "http://169.254.169.254/"}), "HTTP 307"),
]


@pytest.mark.parametrize(("answer", "message"), BAD_ANSWERS)
async def test_bad_answers_become_upstream_errors_without_the_credential(
    upstream: tuple[Upstream, str], answer: Answer, message: str
) -> None:
    state, url = upstream
    state.answer = answer
    caller = _caller(url)
    with pytest.raises(UpstreamError, match=message) as caught:
        await caller.call("echo", {})
    await caller.aclose()
    assert CREDENTIAL not in str(caught.value)


async def test_a_refused_connection_is_an_upstream_error() -> None:
    caller = _caller(f"http://127.0.0.1:{free_port()}/mcp")
    with pytest.raises(UpstreamError, match="failed: connection failed: ConnectionRefusedError"):
        await caller.call("echo", {})
    await caller.aclose()
