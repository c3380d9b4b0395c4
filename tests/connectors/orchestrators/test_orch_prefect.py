"""A real Prefect 3 server: a failing flow run is rerun through the gateway's ``ops`` tools to success."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from orch_e2e import POLICY, failed_run_is_rerun_to_success, unknown_and_ungranted_jobs_are_refused
from orch_servers import TIMINGS, PrefectServer, prefect_server

from conftest import GatewayFactory, RunningGateway, connect, free_port
from mcp_gateway.connectors.orchestrators.config import JobSettings, PrefectSettings
from mcp_gateway.tools.base import ToolContext
from mcp_gateway.tools.ops import build_ops_toolset
from mcp_gateway.types import Principal, SecretValue

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

DEPLOYMENT = "flaky-orders/nightly"


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    with prefect_server(tmp_path_factory.mktemp("prefect"), free_port()) as server:
        yield server
    print(f"\nprefect timings: {TIMINGS}")


def _start(make_gateway: GatewayFactory, prefect: PrefectServer) -> RunningGateway:
    orchestrator = {"kind": "prefect", "url": prefect.api_url, "allow_private_network": True}
    jobs = {
        "flaky": {"orchestrator": "pf", "id": DEPLOYMENT},
        "other": {"orchestrator": "pf", "id": DEPLOYMENT},
    }
    return make_gateway(
        POLICY,
        agents=("agent-a", "agent-b"),
        upstreams={},
        config={"orchestrators": {"pf": orchestrator}, "jobs": jobs},
    )


def _api(prefect: PrefectServer, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    response = httpx.request(method, f"{prefect.api_url}/{path}", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def _counter(prefect: PrefectServer) -> Any:
    async def count_runs() -> int:
        deployment = _api(prefect, "GET", f"deployments/name/{DEPLOYMENT}")
        body = {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}}
        return int(_api(prefect, "POST", "flow_runs/count", body))

    return count_runs


async def test_a_failed_prefect_run_is_rerun_through_the_gateway_and_a_duplicate_reason_launches_nothing(
    make_gateway: GatewayFactory, prefect: PrefectServer
) -> None:
    prefect.marker.unlink(missing_ok=True)
    gw = _start(make_gateway, prefect)

    async def executions(run_id: str) -> int:
        return int(_api(prefect, "GET", f"flow_runs/{run_id}")["run_count"])

    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        await failed_run_is_rerun_to_success(
            gw, client, _counter(prefect), executions, "orders_raw is missing"
        )


async def test_prefect_jobs_outside_config_or_grant_are_refused(
    make_gateway: GatewayFactory, prefect: PrefectServer
) -> None:
    await unknown_and_ungranted_jobs_are_refused(_start(make_gateway, prefect), _counter(prefect))


async def test_a_full_prefect_rerun_with_a_repeated_reason_starts_one_flow_run(
    tmp_path: Path, prefect: PrefectServer
) -> None:
    def no_secrets(name: str) -> SecretValue:
        raise AssertionError("no secret configured")

    ops = build_ops_toolset(
        {"pf": PrefectSettings(kind="prefect", url=prefect.api_url, allow_private_network=True)},
        {"flaky": JobSettings(orchestrator="pf", id=DEPLOYMENT)},
        tmp_path,
        no_secrets,
    )
    tool = ops.tools["ops.rerun_job"]
    args = tool.input_model.model_validate({"job": "flaky", "mode": "full", "reason": "backfill 2026-11-24"})
    count_runs = _counter(prefect)
    before = await count_runs()
    ctx = ToolContext(principal=Principal(agent="agent-a", token_id="t"), call_id="c1")
    first = await tool.run(ctx, args)
    second = await tool.run(ctx, args)
    assert second["run_id"] == first["run_id"] and second["already_launched"] is True
    assert await count_runs() == before + 1
    assert ops.stop is not None
    await ops.stop()
