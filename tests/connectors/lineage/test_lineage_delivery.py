"""OpenLineage delivery to a real HTTP receiver: what arrives, the API key, failures, no secrets."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.connectors.lineage.delivery import LineageDelivery, LineageSink
from mcp_gateway.connectors.siem.syslog import DeliveryError
from mcp_gateway.redact import Redactor
from mcp_gateway.types import AuditEvent, AuditRecord, SecretValue

pytestmark = pytest.mark.anyio

API_KEY = "ol-key-0123456789abcdef"
BRANCH_SECRET = "branch-token-9f8e7d6c5b4a"


class Receiver:
    """An OpenLineage endpoint: records each POST (path, headers, JSON body); answers ``status``."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.status = 201
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def vault(name: str) -> SecretValue:
    return {"ol-key": SecretValue("ol-key", API_KEY.encode())}[name]


def sink_settings(url: str, **more: Any) -> LineageSink:
    return LineageSink(url=url, api_key="secret://ol-key", allow_private_network=True, **more)


async def switch_in_records(audit: AuditLog) -> list[AuditRecord]:
    args = {"table": "lake.sales.orders", "branch": BRANCH_SECRET}
    return [
        await audit.append(
            AuditEvent(
                kind="intent",
                call_id="c1",
                agent="healer",
                tool="data.switch_in",
                decision="allow",
                args=args,
            )
        ),
        await audit.append(
            AuditEvent(kind="intent", call_id="c2", agent="healer", tool="github.search", decision="allow")
        ),
        await audit.append(
            AuditEvent(
                kind="outcome",
                call_id="c1",
                agent="healer",
                tool="data.switch_in",
                decision="allow",
                status="ok",
                detail={"after_snapshot": 7},
            )
        ),
    ]


async def test_a_switch_in_arrives_as_start_and_complete_with_the_key_and_no_secret(
    receiver: Receiver, tmp_path: Path
) -> None:
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    async with AuditLog(sink) as audit:
        records = await switch_in_records(audit)
    redactor = Redactor.from_secrets([SecretValue("branch", BRANCH_SECRET.encode())])
    delivery = LineageDelivery("marquez", sink_settings(receiver.url), sink, vault, lambda: redactor)
    await delivery.send([(r, "") for r in records])
    await delivery.aclose()
    assert [(path, body["eventType"]) for path, _, body in receiver.posts] == [
        ("/api/v1/lineage", "START"),
        ("/api/v1/lineage", "COMPLETE"),
    ]
    assert all(headers["Authorization"] == f"Bearer {API_KEY}" for _, headers, _ in receiver.posts)
    done = receiver.posts[1][2]
    assert done["job"] == {**done["job"], "namespace": "mcp-gateway", "name": "data.switch_in"}
    assert done["outputs"][0]["facets"]["version"]["datasetVersion"] == "7"
    sent = json.dumps([body for _, _, body in receiver.posts])
    assert BRANCH_SECRET not in sent and "[REDACTED:branch]" in sent
    sink.close()


async def test_an_outcome_whose_intent_came_before_a_restart_is_found_in_the_audit_store(
    receiver: Receiver, tmp_path: Path
) -> None:
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    async with AuditLog(sink) as audit:
        records = await switch_in_records(audit)
    fresh = LineageDelivery("marquez", sink_settings(receiver.url, namespace="prod-gw"), sink, vault)
    await fresh.send([(records[-1], "")])  # only the outcome: this delivery never saw the intent
    await fresh.aclose()
    ((_, _, body),) = receiver.posts
    assert body["eventType"] == "COMPLETE" and body["job"]["namespace"] == "prod-gw"
    assert body["inputs"][0]["name"] == f"lake.sales.orders@{BRANCH_SECRET}"  # no redactor given here
    sink.close()


async def test_a_refusing_receiver_is_a_delivery_error_naming_the_host_and_status_only(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.status = 503
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    async with AuditLog(sink) as audit:
        records = await switch_in_records(audit)
    delivery = LineageDelivery("marquez", sink_settings(receiver.url), sink, vault)
    with pytest.raises(DeliveryError) as caught:
        await delivery.send([(r, "") for r in records])
    await delivery.aclose()
    message = str(caught.value)
    assert "HTTP 503" in message and "127.0.0.1" in message and API_KEY not in message
    sink.close()


def test_an_inline_api_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="secret://NAME") as caught:
        LineageSink(url="https://marquez.example", api_key=API_KEY)
    assert API_KEY not in str(caught.value)


async def test_a_private_address_is_refused_by_the_network_guard(tmp_path: Path) -> None:
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    async with AuditLog(sink) as audit:
        records = await switch_in_records(audit)
    guarded = LineageDelivery("marquez", LineageSink(url="http://127.0.0.1:9"), sink, vault)
    with pytest.raises(DeliveryError, match="network guard"):
        await guarded.send([(r, "") for r in records])
    await guarded.aclose()
    sink.close()
