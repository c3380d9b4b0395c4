"""Alerts end to end: a real gateway, conditions caused through it, a real webhook receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from conftest import CONSTRAINED_ECHO, GatewayFactory, connect, grants_policy, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

POLICY = grants_policy({"agent-a": [CONSTRAINED_ECHO]})


class Webhook:
    """A Slack-style incoming webhook: records each JSON body, answers ``ok``."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                hook.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/secretpath"

    def texts(self) -> list[str]:
        return [str(body["text"]) for body in self.bodies]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    thread = threading.Thread(target=hook.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        hook.server.shutdown()
        hook.server.server_close()
        thread.join(timeout=5)


def _alerts(webhook: Webhook, **rules: Any) -> dict[str, Any]:
    return {
        "alerts": {
            "rules": rules,
            "webhook_url": "secret://alert_webhook",
            "allow_private_network": True,
            "poll_seconds": 0.05,
        }
    }


async def test_a_denial_burst_through_the_gateway_reaches_the_webhook_and_is_audited(
    make_gateway: GatewayFactory, webhook: Webhook
) -> None:
    gw = make_gateway(
        POLICY,
        config=_alerts(webhook, denial_burst={"count": 3, "window_seconds": 60}),
        secrets={"alert_webhook": webhook.url},
    )
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        for _ in range(3):
            assert (await client.call_tool("leaky.echo", {"text": "forbidden"})).is_error
    wait_until(lambda: len(webhook.bodies) >= 1, what="the alert webhook")
    (text,) = webhook.texts()
    assert "agent agent-a was denied 3 calls within 60s" in text and "denial_burst" in text
    assert gw.runtime.alerts is not None
    (active,) = gw.runtime.alerts.active()
    assert active.rule == "denial_burst" and active.subject == "agent-a" and active.seq > 0
    (record,) = [r for r in gw.audit() if r.kind == "alert"]
    assert record.seq == active.seq and record.agent == "agent-a"
    assert record.detail["alert_id"] == active.id and record.detail["rule"] == "denial_burst"
    # The webhook URL is a credential: it never appears in the audit record.
    assert "secretpath" not in json.dumps(dict(record.detail))


async def test_authentication_failures_from_one_source_raise_an_alert_with_escaped_text(
    make_gateway: GatewayFactory, webhook: Webhook
) -> None:
    gw = make_gateway(
        POLICY,
        config=_alerts(webhook, auth_failures={"count": 3, "window_seconds": 60}),
        secrets={"alert_webhook": webhook.url},
    )
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(3):
            answer = await http.post(
                gw.url,
                headers={"Authorization": "Bearer mgw_<!channel>_forged", "Accept": "application/json"},
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            )
            assert answer.status_code == 401
    wait_until(lambda: len(webhook.bodies) >= 1, what="the alert webhook")
    (text,) = webhook.texts()
    assert "3 authentication failures from 127.0.0.1" in text
    assert "<!channel>" not in text
    kinds = [r.kind for r in gw.audit()]
    assert kinds.count("auth_failure") >= 3 and "alert" in kinds


async def test_records_no_checkpoint_covers_raise_chain_stalled(
    make_gateway: GatewayFactory, webhook: Webhook
) -> None:
    gw = make_gateway(
        POLICY,
        audit={"path": "audit.db", "checkpoint_every": 100_000, "checkpoint_seconds": 3600},
        config=_alerts(webhook, chain_stalled_seconds=0.2),
        secrets={"alert_webhook": webhook.url},
    )
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        assert not (await client.call_tool("leaky.echo", {"text": "hello"})).is_error
    wait_until(lambda: any("checkpoint writer has stopped" in t for t in webhook.texts()), what="chain alert")
    assert gw.runtime.alerts is not None
    assert [a.rule for a in gw.runtime.alerts.active()] == ["chain_stalled"]
