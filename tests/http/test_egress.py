"""The egress scrubber: whatever message an app sends, as JSON or as an SSE stream cut anywhere, no
form of a vault value leaves, and what leaves is still the message (JSON stays JSON)."""

from __future__ import annotations

import json
import re
import string
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_gateway.http.egress import REFUSED_MESSAGE, EgressScrubber, scrub_message
from mcp_gateway.redact import Redactor
from mcp_gateway.types import SecretValue
from security.test_attack_canary_leak import leak_forms

SECRET_TEXT = st.text(
    alphabet=string.ascii_letters + string.digits + '"\\/+=&%é✓\n', min_size=8, max_size=24
).filter(lambda s: len(s.encode()) >= 8)


def _redactor(secrets: list[str]) -> Redactor:
    return Redactor.from_secrets(SecretValue(f"s{i}", v.encode()) for i, v in enumerate(secrets))


def _messages(secrets: list[str]) -> st.SearchStrategy[Any]:
    """JSON-RPC-like messages with the secrets (raw, or inside other text) in keys and values."""
    planted = st.sampled_from(secrets).flatmap(
        lambda s: st.sampled_from([s, f"pre {s} post", f"{s}{s}", f"k:{s}"])
    )
    strings = st.one_of(st.text(max_size=12), planted)
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), strings)
    tree = st.recursive(
        leaves,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(strings, inner, max_size=4)),
        max_leaves=12,
    )
    return st.fixed_dictionaries(
        {"jsonrpc": st.just("2.0"), "id": st.integers(0, 9)},
        optional={"result": tree, "method": strings, "params": tree, "error": tree},
    )


def _leaks(secrets: list[str], text: str) -> list[str]:
    return [form for value in secrets for form in leak_forms(value) if form in text]


async def _through(app_messages: list[dict[str, Any]], redactor: Redactor) -> tuple[dict[str, Any], bytes]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in app_messages:
            await send(message)

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await EgressScrubber(app, lambda: redactor)({"type": "http"}, None, send)  # type: ignore[arg-type]
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert not sent[-1].get("more_body", False)
    return start, body


def _json_answer(body: bytes) -> list[dict[str, Any]]:
    return [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        },
        {"type": "http.response.body", "body": body[:7], "more_body": True},
        {"type": "http.response.body", "body": body[7:], "more_body": False},
    ]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), secrets=st.lists(SECRET_TEXT, min_size=1, max_size=3, unique=True))
def test_no_secret_form_leaves_in_a_json_answer_and_the_answer_stays_json(
    data: st.DataObject, secrets: list[str]
) -> None:
    message = data.draw(_messages(secrets))
    ascii_only = data.draw(st.booleans())
    body = json.dumps(message, ensure_ascii=ascii_only).encode()
    start, out = anyio.run(_through, _json_answer(body), _redactor(secrets))
    text = out.decode()
    assert _leaks(secrets, text) == []
    decoded = json.loads(text)
    assert decoded["id"] == message["id"]
    assert dict(start["headers"])[b"content-length"] == str(len(out)).encode()


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), secrets=st.lists(SECRET_TEXT, min_size=1, max_size=3, unique=True))
def test_no_secret_form_leaves_in_an_sse_stream_cut_anywhere(data: st.DataObject, secrets: list[str]) -> None:
    events = data.draw(st.lists(_messages(secrets), min_size=1, max_size=4))
    stream = b"".join(b"event: message\r\ndata: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    app = [
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
    ]
    app += [{"type": "http.response.body", "body": p, "more_body": True} for p in pieces]
    app.append({"type": "http.response.body", "body": b"", "more_body": False})
    _, out = anyio.run(_through, app, _redactor(secrets))
    text = out.decode()
    assert _leaks(secrets, text) == []
    lines = re.split(r"\r\n|\r|\n", text)  # SSE's line ends only
    received = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
    assert [m["id"] for m in received] == [e["id"] for e in events]


def test_an_answer_without_any_secret_leaves_byte_for_byte_unchanged() -> None:
    body = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"caf\\u00e9"}]}}'
    _, out = anyio.run(_through, _json_answer(body), _redactor(["s3cr3t-value"]))
    assert out == body


def test_a_secret_split_across_a_key_and_its_value_refuses_the_whole_message() -> None:
    secret = 'ab":"cdefgh'
    text = json.dumps({"jsonrpc": "2.0", "id": 4, "result": {"ab": "cdefgh"}}, separators=(",", ":"))
    scrubbed, found = scrub_message(text, _redactor([secret]))
    assert found
    assert json.loads(scrubbed) == {
        "jsonrpc": "2.0",
        "id": 4,
        "error": {"code": -32603, "message": REFUSED_MESSAGE},
    }


@pytest.mark.parametrize("value", ["hdr-secret-123", "x-hdr-secret-123-y"])
def test_a_header_holding_a_secret_is_scrubbed(value: str) -> None:
    app = [
        {"type": "http.response.start", "status": 401, "headers": [(b"www-authenticate", value.encode())]},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]
    start, _ = anyio.run(_through, app, _redactor(["hdr-secret-123"]))
    assert b"hdr-secret-123" not in dict(start["headers"])[b"www-authenticate"]
