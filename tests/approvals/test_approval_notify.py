"""The approval webhook, against a real HTTP server on 127.0.0.1 that records what it receives."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest

from mcp_gateway.approvals.model import Approval
from mcp_gateway.approvals.notify import ApprovalNotifier, approval_message
from mcp_gateway.errors import SecretNotFound
from mcp_gateway.types import SecretValue

SECRET_PATH = "/services/T000/B000/sEcReTpAtH"


@dataclass
class Hook:
    """A local webhook: answers with ``statuses`` in turn (then 200), records each body."""

    port: int
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    hang: threading.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{SECRET_PATH}?token=qUeRySeCrEt"


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            state.bodies.append(json.loads(self.rfile.read(length)))
            state.paths.append(self.path)
            if state.hang is not None:
                state.hang.wait(timeout=10)
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    if state.hang is not None:
        state.hang.set()
    server.shutdown()
    server.server_close()


def _approval() -> Approval:
    return Approval(
        id="apr_test123",
        agent="ops-agent",
        tool="ops.rerun_job",
        args_hash="0" * 64,
        args={"job": "nightly <!channel> & <https://evil.example|click>", "api_key": "[redacted]"},
        reason="reruns need a human",
        created_at=1_700_000_000.0,
        expires_at=1_700_003_600.0,
    )


@pytest.mark.anyio
async def test_a_new_request_is_posted_as_slack_json_to_the_webhook(hook: Hook) -> None:
    notifier = ApprovalNotifier(hook.url, allow_private_network=True, timeout_seconds=5)
    with anyio.fail_after(15):
        assert await notifier.notify(_approval()) is True
    assert hook.paths == [f"{SECRET_PATH}?token=qUeRySeCrEt"]
    (body,) = hook.bodies
    assert body == approval_message(_approval())
    assert "apr_test123" in body["text"] and "ops.rerun_job" in body["text"]
    assert [block["type"] for block in body["blocks"]] == ["section", "section", "context"]
    text = json.dumps(body)
    # Agent-controlled text cannot ping the channel or plant a link.
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text and "<https://" not in text
    assert "mcp-gateway approvals approve apr_test123" in text


@pytest.mark.anyio
async def test_a_secret_webhook_url_is_resolved_at_send_time_and_kept_out_of_logs(
    hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    asked: list[str] = []

    def resolve(name: str) -> SecretValue:
        asked.append(name)
        return SecretValue(name, hook.url.encode())

    hook.statuses = [500, 503]
    notifier = ApprovalNotifier("secret://slack_hook", resolve_secret=resolve, allow_private_network=True)
    with caplog.at_level(logging.WARNING), anyio.fail_after(15):
        assert await notifier.notify(_approval()) is False
    assert asked == ["slack_hook"] and len(hook.bodies) == 2  # one retry after a server error, no more
    assert f"127.0.0.1:{hook.port}" in caplog.text and "HTTP 503" in caplog.text
    assert "sEcReTpAtH" not in caplog.text and "qUeRySeCrEt" not in caplog.text
    assert "sEcReTpAtH" not in repr(notifier)


@pytest.mark.anyio
async def test_a_refusal_by_the_webhook_is_not_retried(hook: Hook) -> None:
    hook.statuses = [400]
    notifier = ApprovalNotifier(hook.url, allow_private_network=True)
    with anyio.fail_after(15):
        assert await notifier.notify(_approval()) is False
    assert len(hook.bodies) == 1


@pytest.mark.anyio
async def test_a_loopback_webhook_is_refused_by_the_ssrf_guard_unless_allowed(
    hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = ApprovalNotifier(hook.url)
    with caplog.at_level(logging.WARNING), anyio.fail_after(15):
        assert await notifier.notify(_approval()) is False
    assert hook.bodies == [] and "network guard" in caplog.text and "loopback" in caplog.text


@pytest.mark.anyio
async def test_a_missing_secret_or_a_hanging_webhook_never_raises_and_is_bounded(
    hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    def missing(name: str) -> SecretValue:
        raise SecretNotFound(f"no secret `{name}`")

    with caplog.at_level(logging.WARNING), anyio.fail_after(10):
        assert await ApprovalNotifier("secret://gone", resolve_secret=missing).notify(_approval()) is False
        assert "no secret `gone`" in caplog.text
        hook.hang = threading.Event()
        slow = ApprovalNotifier(hook.url, allow_private_network=True, timeout_seconds=0.3)
        assert await slow.notify(_approval()) is False
    assert len(hook.bodies) == 2 and "ReadTimeout" in caplog.text


@pytest.mark.anyio
async def test_submitted_approvals_are_sent_in_the_background_without_waiting(hook: Hook) -> None:
    notifier = ApprovalNotifier(hook.url, allow_private_network=True, queue_size=2)
    hook.hang = threading.Event()  # the webhook stalls: submit must still return at once
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(notifier.run)
            assert notifier.submit(_approval()) is True
            assert notifier.submit(_approval()) is True
            assert notifier.submit(_approval()) is False  # full: run has not taken any yet
            while not hook.bodies:
                await anyio.sleep(0.01)
            hook.hang.set()
            while len(hook.bodies) < 2:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    assert all(body["text"] == approval_message(_approval())["text"] for body in hook.bodies)
