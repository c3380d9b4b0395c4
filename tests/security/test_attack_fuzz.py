"""Attack: malformed input at the front door. Hypothesis POSTs to ``/mcp``, with a valid token:

random bytes; random JSON; JSON-RPC with random methods, params and ids (and batches); deeply nested
JSON (bare and inside a call's arguments); strings up to and past the body limit; odd numbers and
characters (NaN, Infinity, 1e400, lone surrogates, NUL); wrong content types and Accept headers; both
protocol eras' headers, with and without a live session. No answer may be a 5xx, each must come back
within the client's timeout, and afterwards the gateway still serves a normal SDK call in both eras
and its audit chain (which recorded the fuzzed calls' arguments) verifies.

``MCP_GATEWAY_FUZZ_EXAMPLES`` (default 150, sized for CI) sets the number of requests; try 5000
locally. If ``atheris`` is installed, a coverage-guided run over the call path's pure steps follows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ERAS, FIXTURES, GatewayFactory, connect
from mcp_gateway.audit.verify import verify
from mcp_gateway.http.modern import EraRouter

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("MCP_GATEWAY_FUZZ_EXAMPLES", "150"))
TIMEOUT = 10.0
BODY_LIMIT = 1_048_576  # server.max_body_bytes default

POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - id: a-echo
        tool: leaky.echo
        args:
          text: {max_length: 300000}
"""

MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "fuzz", "version": "1"},
}
METHODS = [
    "initialize",
    "notifications/initialized",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "prompts/get",
    "ping",
    "logging/setLevel",
    "notifications/cancelled",
    "completion/complete",
    "subscriptions/listen",
]

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
ids = st.none() | st.integers() | st.text(max_size=12) | st.floats(allow_nan=False) | json_value
methods = st.sampled_from(METHODS) | st.text(max_size=30)


@st.composite
def jsonrpc(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": draw(st.sampled_from(["2.0", "2.0", "1.0", 2.0, None]))}
    message["method"] = draw(methods)
    if draw(st.booleans()):
        message["id"] = draw(ids)
    if draw(st.booleans()):
        params = draw(json_value | st.dictionaries(st.text(max_size=8), json_value, max_size=4))
        if isinstance(params, dict) and draw(st.booleans()):
            params["_meta"] = MODERN_META  # far enough to reach the handlers in the modern era
        message["params"] = params
    return message


@st.composite
def tool_call(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(["leaky.echo", "leaky.leak_env", "leaky."]) | st.text(max_size=40))
    arguments = draw(st.dictionaries(st.text(max_size=8), json_value, max_size=5) | json_value)
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if draw(st.booleans()):
        params["_meta"] = MODERN_META
    return {"jsonrpc": "2.0", "id": draw(ids), "method": "tools/call", "params": params}


def _nested(depth: int, kind: str) -> bytes:
    """``depth`` levels of arrays or objects: a bare body, or a call's argument value."""
    arrays = "[" * depth + "]" * depth
    if kind == "list":
        return arrays.encode()
    if kind == "dict":
        return ('{"a":' * depth + "1" + "}" * depth).encode()
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "leaky.echo", "arguments": {"text": "HERE"}, "_meta": MODERN_META},
    }
    return json.dumps(call).replace('"HERE"', arrays).encode()


def _huge(size: int) -> bytes:
    call = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "leaky.echo", "arguments": {"text": "x" * size}, "_meta": MODERN_META},
    }
    return json.dumps(call).encode()


ODD_TOKENS = [
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"leaky.echo","arguments":{"text":NaN}}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"leaky.echo","arguments":{"n":1e400}}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"leaky.echo","arguments":{"n":-Infinity}}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"leaky.echo","arguments":{"text":"\\ud800\\u0000"}}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"leaky.\\ud800","arguments":{"\\u0000":1}}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"leaky.echo","arguments":{"text":"a","text":"b"}}}',
    b'\xef\xbb\xbf{"jsonrpc":"2.0","id":1,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping"}' * 3,
    b"[]",
    b"null",
    b'"\xff\xfe"',
]

bodies = st.one_of(
    st.binary(max_size=2048),
    json_value.map(lambda v: json.dumps(v).encode()),
    jsonrpc().map(lambda m: json.dumps(m).encode()),
    tool_call().map(lambda m: json.dumps(m).encode()),
    st.lists(jsonrpc() | tool_call(), min_size=1, max_size=4).map(lambda b: json.dumps(b).encode()),
    st.builds(_nested, st.sampled_from([2, 40, 1_000, 100_000]), st.sampled_from(["list", "dict", "args"])),
    st.sampled_from([1_000, 200_000, 300_000, BODY_LIMIT - 200, BODY_LIMIT + 1]).map(_huge),
    st.sampled_from(ODD_TOKENS),
)

# h11 refuses header values with surrounding whitespace before they are sent: strip them.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)


@st.composite
def headers(draw: st.DrawFn, session: str) -> dict[str, str]:
    sent = {
        "Content-Type": draw(
            st.sampled_from(
                [
                    "application/json",
                    "application/json",
                    "application/json; charset=utf-8",
                    "application/json; charset=utf-16",
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=x",
                    "",
                ]
            )
            | header_text
        ),
        "Accept": draw(
            st.sampled_from(
                ["application/json, text/event-stream", "application/json", "text/event-stream", "*/*", ""]
            )
        ),
    }
    optional = {
        "MCP-Protocol-Version": st.sampled_from(["2025-11-25", "2026-07-28", "2024-11-05"]) | header_text,
        "Mcp-Method": st.sampled_from(METHODS) | header_text,
        "Mcp-Name": st.sampled_from(["leaky.echo", "leaky.leak_env"]) | header_text,
        "Mcp-Session-Id": st.sampled_from([session, session[:-1], "0" * 32]) | header_text,
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            sent[name] = draw(strategy)
    return sent


def _header_safe(value: Any) -> bool:
    return isinstance(value, str) and value == value.strip() and all(" " <= c <= "~" for c in value)


@st.composite
def coherent(draw: st.DrawFn, session: str) -> tuple[bytes, dict[str, str]]:
    """A request whose headers agree with its body, in one era, so that it reaches the handlers."""
    sent = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if draw(st.booleans()):
        sent |= {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
        message = draw(jsonrpc() | tool_call())
        body = draw(st.just(json.dumps(message).encode()) | st.sampled_from(ODD_TOKENS))
        return body, sent
    message = draw(jsonrpc() | tool_call())
    params = message.get("params")
    if isinstance(params, dict):
        params["_meta"] = MODERN_META
    sent["MCP-Protocol-Version"] = "2026-07-28"
    if _header_safe(message.get("method")):
        sent["Mcp-Method"] = message["method"]
    if isinstance(params, dict) and _header_safe(params.get("name")):
        sent["Mcp-Name"] = params["name"]
    calls = st.builds(_nested, st.sampled_from([2, 40, 1_000, 100_000]), st.just("args")) | st.sampled_from(
        [1_000, 200_000, 300_000, BODY_LIMIT - 200, BODY_LIMIT + 1]
    ).map(_huge)
    if draw(st.integers(0, 4)) == 0:
        sent |= {"Mcp-Method": "tools/call", "Mcp-Name": "leaky.echo"}
        return draw(calls), sent
    return json.dumps(message).encode(), sent


def requests(session: str) -> st.SearchStrategy[tuple[bytes, dict[str, str]]]:
    """Half chaos (any body, any headers), half coherent requests that get past the transport."""
    return st.tuples(bodies, headers(session)) | coherent(session)


def _messages(response: httpx.Response) -> list[Any]:
    """The JSON-RPC messages of a JSON or SSE answer (empty when it has none)."""
    kind = response.headers.get("content-type", "")
    try:
        if kind.startswith("application/json"):
            return [response.json()]
        if kind.startswith("text/event-stream"):
            return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    except ValueError:
        return []
    return []


def internal_errors(response: httpx.Response) -> list[Any]:
    """JSON-RPC ``-32603`` errors: an exception escaped a handler (a crash, however politely put)."""
    found = []
    for message in _messages(response):
        for item in message if isinstance(message, list) else [message]:
            if isinstance(item, dict) and isinstance(item.get("error"), dict):
                if item["error"].get("code") == -32603:
                    found.append(item)
    return found


def has_lone_surrogate(body: bytes) -> bool:
    """Whether the JSON body decodes to a string that is not valid Unicode (a lone surrogate)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return False
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def _open_legacy_session(http: httpx.Client, url: str) -> str:
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "f", "version": "1"},
        },
    }
    accept = {"Accept": "application/json, text/event-stream"}
    opened = http.post(url, json=init, headers=accept)
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    # Completing the handshake lets the lean path serve calls in this session too (session_path.py).
    done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    headers = accept | {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    assert http.post(url, json=done, headers=headers).status_code == 202
    return session


def test_no_malformed_request_gets_a_5xx_or_hangs_and_the_gateway_serves_afterwards(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(POLICY, watch_policy=False)
    auth = {"Authorization": f"Bearer {gw.tokens['agent-a']}"}
    seen: dict[int, int] = {}
    with httpx.Client(headers=auth, timeout=TIMEOUT) as http:
        session = _open_legacy_session(http, gw.url)

        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(request=requests(session))
        def one_request(request: tuple[bytes, dict[str, str]]) -> None:
            body, sent = request
            # A timeout raises here: an answer that does not come within TIMEOUT fails the test.
            response = http.post(gw.url, content=body, headers=sent)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (response.status_code, response.text[:300], body[:200], sent)
            assert internal_errors(response) == [], (response.text[:300], body[:200], sent)

        one_request()
    # Not vacuous: the fuzz got past the transport (answers 200, some calls audited) and was refused.
    assert seen.get(200, 0) >= EXAMPLES // 20 and any(400 <= code < 500 for code in seen), seen
    assert any(r.tool == "leaky.echo" for r in gw.audit() if r.kind in ("intent", "denied"))
    doors = gw.layer(EraRouter)
    # Both front doors were fuzzed: session-less 2026-07-28 requests and requests in the 2025-11-25 session.
    assert doors.modern.served > 0 and doors.app.served > 0

    async def normal_calls() -> list[str]:
        texts = []
        with anyio.fail_after(30):
            for mode in ERAS:
                async with connect(gw.url, gw.tokens["agent-a"], mode) as client:
                    result = await client.call_tool("leaky.echo", {"text": f"still here in {mode}"})
                    assert not result.is_error, result
                    texts += [getattr(block, "text", "") for block in result.content]
        return texts

    assert anyio.run(normal_calls) == [f"still here in {mode}" for mode in ERAS]
    report = verify(gw.audit())
    assert report.ok, report.problems[:5]


def test_the_pure_steps_of_the_call_path_survive_coverage_guided_fuzzing(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris is optional (pip install atheris)")
    runs = max(EXAMPLES * 20, 2000)
    done = subprocess.run(
        [
            sys.executable,
            str(FIXTURES / "fuzz_call_path.py"),
            f"-runs={runs}",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Done {runs} runs" in done.stderr, done.stderr[-1000:]


def test_a_lone_surrogate_in_a_calls_arguments_is_refused_clearly_and_audited(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(POLICY, watch_policy=False)
    sent = {
        "Authorization": f"Bearer {gw.tokens['agent-a']}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "leaky.echo",
    }
    for argument in ['"\\ud800"', '"a\\udc00b"', '["\\ud800"]', '{"\\ud800": 1}']:
        body = (
            '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"leaky.echo",'
            f'"arguments":{{"text":{argument}}},"_meta":{json.dumps(MODERN_META)}}}}}'
        )
        assert has_lone_surrogate(body.encode())
        response = httpx.post(gw.url, content=body.encode(), headers=sent, timeout=TIMEOUT)
        assert response.status_code == 200 and internal_errors(response) == [], response.text[:300]
    audited = [r for r in gw.audit() if r.kind in ("denied", "intent") and r.tool == "leaky.echo"]
    assert len(audited) == 4
