"""``telemetry: {exporter: otlp}`` end to end: a gateway process (``mcp-gateway serve``) exports its
spans and metrics over OTLP/HTTP (protobuf, ``opentelemetry-exporter-otlp-proto-http``) to a real
HTTP receiver started by the test, which decodes them with the OTLP protobuf definitions."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from conftest import connect, free_port, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

EXE = Path(sys.executable).parent / "mcp-gateway"


@dataclass
class Received:
    """The OTLP requests the receiver got: (path, protobuf body)."""

    posts: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self, path: str) -> list[bytes]:
        with self.lock:
            return [body for p, body in self.posts if p == path]


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            assert self.headers.get("Content-Type") == "application/x-protobuf"
            with received.lock:
                received.posts.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def _values(attributes: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for kv in attributes:
        assert isinstance(kv, KeyValue)
        which = kv.value.WhichOneof("value")
        found[kv.key] = getattr(kv.value, which) if which else None
    return found


@dataclass
class Served:
    url: str
    token: str
    process: subprocess.Popen[bytes]


@pytest.fixture
def gateway(tmp_path: Path, receiver: tuple[str, Received]) -> Iterator[Served]:
    """A gateway made by ``mcp-gateway init`` with OTLP export to the receiver, in its own process."""
    base, _ = receiver
    port = free_port()
    folder = tmp_path / "gw"
    subprocess.run([str(EXE), "init", str(folder), "--port", str(port)], check=True, capture_output=True)
    config = folder / "gateway.yaml"
    config.write_text(
        config.read_text()
        + f"\ntelemetry:\n  exporter: otlp\n  endpoint: {base}/v1/traces\n  metrics_interval_seconds: 0.2\n"
    )
    token = subprocess.run(
        [str(EXE), "agents", "create", "my-agent", "-c", str(config)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    log = (tmp_path / "serve.log").open("wb")
    # The SDK's batch span processor exports every 5 s by default; its own setting makes it 0.1 s.
    env = {**os.environ, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    proc = subprocess.Popen(
        [str(EXE), "serve", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env
    )

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=60, what="the gateway")
        yield Served(f"http://127.0.0.1:{port}/mcp", token, proc)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        log.close()


async def test_spans_and_metrics_reach_an_otlp_http_receiver(
    gateway: Served, receiver: tuple[str, Received]
) -> None:
    _, received = receiver
    async with connect(gateway.url, gateway.token, mode="legacy") as client:
        with anyio.fail_after(30):
            await client.call_tool("time.get_current_time", {"timezone": "UTC"})
    # Metrics are exported every 0.2 s: wait (bounded) for the upstream gauge and the duration.
    wanted = {"mcp.server.operation.duration", "mcp_gateway.upstream.up", "mcp_gateway.policy.decisions"}

    def metric_names() -> set[str]:
        names: set[str] = set()
        for body in received.bodies("/v1/metrics"):
            request = ExportMetricsServiceRequest.FromString(body)
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    names.update(m.name for m in scope.metrics)
        return names

    await anyio.to_thread.run_sync(lambda: wait_until(lambda: wanted <= metric_names(), what="metrics"))

    def exported_spans() -> list[Any]:
        found: list[Any] = []
        for body in received.bodies("/v1/traces"):
            for resource in ExportTraceServiceRequest.FromString(body).resource_spans:
                assert _values(resource.resource.attributes)["service.name"] == "mcp-gateway"
                for scope in resource.scope_spans:
                    found.extend((scope.scope.name, span) for span in scope.spans)
        return found

    await anyio.to_thread.run_sync(lambda: wait_until(lambda: bool(exported_spans()), what="spans"))
    spans = exported_spans()
    assert [(scope, span.name) for scope, span in spans] == [
        ("mcp_gateway", "tools/call time.get_current_time")
    ]
    attributes = _values(spans[0][1].attributes)
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes["gen_ai.tool.name"] == "time.get_current_time"
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["mcp_gateway.decision"] == "allow"
    assert "UTC" not in repr(attributes)  # no argument value
