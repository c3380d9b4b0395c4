"""Monitors and lineage in a running gateway: revenue mixing JPY and USD raises an incident the agent
reads as ``incident://``; the agent's fix on a branch, switched in, recovers it with the agent's call
as its resolution; the data actions reach an OpenLineage receiver as run events."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import GatewayFactory, connect, wait_until
from mcp_gateway.connectors.warehouse.config import IcebergSettings
from mcp_gateway.demo.lake import DEMO_POLICY, seed_demo

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

REVENUE = "lake.sales.revenue"


class LineageReceiver:
    """A real HTTP OpenLineage endpoint that keeps the events it was sent."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[LineageReceiver]:
    server = LineageReceiver()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _policy() -> str:
    grants = [
        {"id": "fix-data", "tool": "data.*", "max_rows": 5},
        {"id": "read-incidents", "tool": "resource:gateway:incident://*"},
    ]
    return yaml.safe_dump({"version": 1, "agents": {"healer": {"grants": grants}}, **DEMO_POLICY})


def _config(lake: Path, receiver: LineageReceiver) -> dict[str, Any]:
    lake.mkdir(parents=True)
    warehouse = {
        "kind": "iceberg",
        "catalog_uri": f"sqlite:///{lake / 'catalog.db'}",
        "warehouse": str(lake / "w"),
    }
    seed_demo(IcebergSettings.model_validate(warehouse))
    return {
        "warehouses": {"lake": warehouse},
        "monitors": {
            "one_currency": {
                "table": REVENUE,
                "checks": [{"metric": "named", "name": "distinct_currencies", "max": 1}],
                "every_seconds": 1,
            }
        },
        "siem": {
            "sinks": {"lineage": {"type": "openlineage", "url": receiver.url, "allow_private_network": True}},
            "poll_seconds": 0.05,
        },
    }


def _text(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


async def test_mixed_currencies_raise_an_incident_the_agent_fixes_and_lineage_shows_it(
    make_gateway: GatewayFactory, receiver: LineageReceiver, tmp_path: Path
) -> None:
    gw = make_gateway(
        _policy(), agents=("healer",), upstreams={}, config=_config(tmp_path / "lake", receiver)
    )
    wait_until(lambda: any(r.kind == "incident" and r.status == "open" for r in gw.audit()), what="incident")
    opened = next(r for r in gw.audit() if r.kind == "incident" and r.status == "open")
    incident_uri = f"incident://{opened.detail['incident']}"

    async with connect(gw.url, gw.tokens["healer"]) as client:
        listed = [str(r.uri) for r in (await client.list_resources()).resources]
        assert incident_uri in listed
        read = await client.read_resource(incident_uri)
        body = json.loads(read.contents[0].text)  # type: ignore[union-attr]
        assert body["status"] == "open" and body["failing"][0]["check"] == "named(distinct_currencies)"
        # The fix: the JPY row converted on a branch, verified and switched in.
        fix = {
            "where": [{"column": "id", "op": "=", "value": 3}],
            "set": {"amount": 100_000.0, "currency": "USD"},
        }
        assert not (await client.call_tool("data.clone_table", {"table": REVENUE, "branch": "usd"})).is_error
        updated = await client.call_tool("data.update_rows", {"table": REVENUE, "branch": "usd", **fix})
        assert not updated.is_error, _text(updated)
        switched = await client.call_tool("data.switch_in", {"table": REVENUE, "branch": "usd"})
        assert not switched.is_error, _text(switched)

    wait_until(
        lambda: any(r.kind == "incident" and r.status == "recovered" for r in gw.audit()), what="recovery"
    )
    recovered = next(r for r in gw.audit() if r.kind == "incident" and r.status == "recovered")
    assert [f["tool"] for f in recovered.detail["resolution"]] == ["data.switch_in"]
    assert recovered.detail["resolution"][0]["agent"] == "healer"

    wanted = [("data.clone_table", "START"), ("data.update_rows", "COMPLETE"), ("data.switch_in", "COMPLETE")]
    wait_until(
        lambda: all(any((e["job"]["name"], e["eventType"]) == w for e in receiver.events) for w in wanted),
        what="lineage events",
    )
    switched_event = next(
        e for e in receiver.events if e["job"]["name"] == "data.switch_in" and e["eventType"] == "COMPLETE"
    )
    assert switched_event["outputs"][0]["name"] == REVENUE
    assert switched_event["inputs"][0]["name"] == f"{REVENUE}@usd"
