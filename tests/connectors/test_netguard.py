"""SSRF guard: upstream hosts that resolve to internal addresses are refused unless allowed."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter

from conftest import GatewayFactory, connect, wait_until
from mcp_gateway.connectors.netguard import (
    BlockedAddress,
    GuardedTransport,
    blocked_reason,
    check_upstream_url,
)
from mcp_gateway.connectors.orchestrators.airflow import AirflowOrchestrator
from mcp_gateway.connectors.orchestrators.base import OrchestratorError, OrchestratorUnavailable
from mcp_gateway.connectors.orchestrators.config import OrchestratorSettings
from mcp_gateway.connectors.orchestrators.dagster import DagsterOrchestrator
from mcp_gateway.connectors.orchestrators.dbt_cloud import DbtCloudOrchestrator
from mcp_gateway.connectors.orchestrators.prefect import PrefectOrchestrator
from mcp_gateway.connectors.salesforce.client import SalesforceClient
from mcp_gateway.connectors.salesforce.config import SalesforceOrgSettings
from mcp_gateway.connectors.salesforce.errors import SalesforceRequestError
from mcp_gateway.errors import UpstreamError
from mcp_gateway.types import SecretValue


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "metadata"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - a test value, nothing binds to it
        ("224.0.0.1", "multicast"),
    ],
)
def test_every_internal_address_class_is_blocked(address: str, reason: str) -> None:
    why = blocked_reason(ipaddress.ip_address(address))
    assert why is not None and reason in why


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "93.184.216.34"])
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


@pytest.mark.anyio
async def test_a_hostname_resolving_to_loopback_is_refused_unless_allowed() -> None:
    with pytest.raises(UpstreamError) as info:
        await check_upstream_url("http://localhost:9/mcp", allow_private_network=False)
    assert "loopback" in str(info.value) and "allow_private_network" in str(info.value)
    await check_upstream_url("http://localhost:9/mcp", allow_private_network=True)


POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - tool: "up.*"
"""


@pytest.mark.anyio
@pytest.mark.e2e
async def test_an_upstream_on_a_private_address_is_not_contacted_without_opt_in(
    make_gateway: GatewayFactory, http_upstream: tuple[str, Path]
) -> None:
    url, log = http_upstream
    gw = make_gateway(POLICY, upstreams={"up": {"transport": "http", "url": url}})
    wait_until(lambda: "loopback" in gw.readiness()["upstreams"]["up"], what="refusal")
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        assert (await client.list_tools()).tools == []
        result = await client.call_tool("up.echo", {"text": "hi"})
    assert result.is_error and "unavailable" in result.content[0].text  # type: ignore[union-attr]
    assert not log.exists()


class _Redirect(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.send_response(307)
        self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def redirecting_upstream() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mcp"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.anyio
@pytest.mark.e2e
async def test_a_redirect_to_a_metadata_address_is_not_followed(
    make_gateway: GatewayFactory, redirecting_upstream: str
) -> None:
    gw = make_gateway(
        POLICY,
        upstreams={"up": {"transport": "http", "url": redirecting_upstream, "allow_private_network": True}},
    )
    wait_until(
        lambda: "unavailable" in gw.readiness()["upstreams"]["up"],
        what="redirect refusal",
    )
    status = gw.readiness()["upstreams"]["up"]
    assert "169.254.169.254" in status or "redirect" in status.lower()


# ---- adapters: every request of the orchestrator and Salesforce clients passes the guard ----------


class _Counting(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def counting_server() -> Iterator[tuple[str, type[_Counting]]]:
    handler = type("Counting", (_Counting,), {"hits": 0})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.anyio
async def test_the_guarded_transport_refuses_internal_hosts_before_the_request_leaves() -> None:
    sent: list[str] = []

    def inner(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=GuardedTransport(httpx.MockTransport(inner))) as client:
        for url in ("http://10.1.2.3/x", "http://169.254.169.254/latest", "http://[::1]:80/"):
            with pytest.raises(BlockedAddress, match=r"private|metadata|loopback"):
                await client.get(url)
        assert (await client.get("http://93.184.216.34/ok")).status_code == 200
    allowed = GuardedTransport(httpx.MockTransport(inner), allow_private_network=True)
    async with httpx.AsyncClient(transport=allowed) as client:
        assert (await client.get("http://10.1.2.3/x")).status_code == 200
    assert sent == ["http://93.184.216.34/ok", "http://10.1.2.3/x"]


JOB_IDS = {"prefect": "flow/deployment", "airflow": "dag", "dbt_cloud": "1", "dagster": "loc/job"}


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["prefect", "airflow", "dbt_cloud", "dagster"])
async def test_an_orchestrator_on_loopback_is_not_contacted_without_opt_in(
    kind: str, counting_server: tuple[str, type[_Counting]]
) -> None:
    url, handler = counting_server
    raw: dict[str, Any] = {
        "prefect": {"kind": "prefect", "url": f"{url}/api"},
        "airflow": {"kind": "airflow", "url": url, "username": "u", "password": "secret://pw"},
        "dbt_cloud": {"kind": "dbt_cloud", "url": url, "account_id": 1, "token": "secret://pw"},
        "dagster": {"kind": "dagster", "url": url},
    }[kind]
    settings = TypeAdapter(OrchestratorSettings).validate_python(raw)
    adapter = {
        "prefect": PrefectOrchestrator,
        "airflow": AirflowOrchestrator,
        "dbt_cloud": DbtCloudOrchestrator,
        "dagster": DagsterOrchestrator,
    }[kind]
    orchestrator = adapter(settings, lambda name: SecretValue(name, b"pw-value-123"))  # type: ignore[arg-type]
    try:
        with pytest.raises(OrchestratorError, match="loopback") as caught:
            await orchestrator.status(JOB_IDS[kind], "1")
        assert not isinstance(caught.value, OrchestratorUnavailable)
    finally:
        await orchestrator.aclose()
    assert handler.hits == 0


@pytest.mark.anyio
async def test_a_salesforce_instance_url_on_a_private_address_gets_no_request() -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.host)
        # A token answer (from a compromised or spoofed login host) that points API calls inward.
        return httpx.Response(
            200, json={"access_token": "00D!tok-123456", "instance_url": "https://10.9.8.7"}
        )

    settings = SalesforceOrgSettings(
        login_url="https://93.184.216.34", client_id="c", client_secret="secret://s"
    )
    client = SalesforceClient(
        "prod",
        settings,
        lambda name: SecretValue(name, b"sf-secret-value"),
        transport=GuardedTransport(httpx.MockTransport(handler)),
    )
    try:
        with pytest.raises(SalesforceRequestError, match="private address"):
            await client.get_record("Opportunity", "006000000000001AAA")
    finally:
        await client.aclose()
    assert sent == ["93.184.216.34"]
