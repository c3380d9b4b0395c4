"""A real Airflow 3 server: a failing DAG run is rerun through the gateway's ``ops`` tools to success."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from orch_e2e import POLICY, failed_run_is_rerun_to_success, unknown_and_ungranted_jobs_are_refused
from orch_servers import AIRFLOW_PASSWORD, AIRFLOW_USER, TIMINGS, AirflowServer, airflow_server

from conftest import GatewayFactory, RunningGateway, connect, free_port
from mcp_gateway.connectors.orchestrators.config import AirflowSettings, JobSettings
from mcp_gateway.tools.base import ToolContext
from mcp_gateway.tools.ops import build_ops_toolset
from mcp_gateway.types import Principal, SecretValue

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

DAG = "flaky_load"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowServer]:
    log_ports = (free_port(), free_port())
    with airflow_server(tmp_path_factory.mktemp("airflow"), free_port(), log_ports) as server:
        yield server
    print(f"\nairflow timings: {TIMINGS}")


def _start(make_gateway: GatewayFactory, airflow: AirflowServer) -> RunningGateway:
    orchestrator = {
        "kind": "airflow",
        "url": airflow.url,
        "username": AIRFLOW_USER,
        "password": "secret://airflow-pw",
        "allow_private_network": True,
    }
    return make_gateway(
        POLICY,
        agents=("agent-a", "agent-b"),
        upstreams={},
        secrets={"airflow-pw": AIRFLOW_PASSWORD},
        config={
            "orchestrators": {"af": orchestrator},
            "jobs": {"flaky": {"orchestrator": "af", "id": DAG}, "other": {"orchestrator": "af", "id": DAG}},
        },
    )


def _api(airflow: AirflowServer, path: str) -> Any:
    token = httpx.post(
        f"{airflow.url}/auth/token", json={"username": AIRFLOW_USER, "password": AIRFLOW_PASSWORD}, timeout=10
    ).json()["access_token"]
    response = httpx.get(
        f"{airflow.url}/api/v2/{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    response.raise_for_status()
    return response.json()


def _counter(airflow: AirflowServer) -> Any:
    async def count_runs() -> int:
        return int(_api(airflow, f"dags/{DAG}/dagRuns?limit=1")["total_entries"])

    return count_runs


async def test_a_failed_airflow_run_is_cleared_through_the_gateway_and_a_duplicate_reason_launches_nothing(
    make_gateway: GatewayFactory, airflow: AirflowServer
) -> None:
    airflow.marker.unlink(missing_ok=True)
    gw = _start(make_gateway, airflow)

    async def executions(run_id: str) -> int:
        return int(_api(airflow, f"dags/{DAG}/dagRuns/{run_id}/taskInstances/load")["try_number"])

    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        await failed_run_is_rerun_to_success(
            gw, client, _counter(airflow), executions, "warehouse refused the load"
        )
    # `failed_only` reran the failed task alone: the upstream task ran once.
    run_id = _api(airflow, f"dags/{DAG}/dagRuns?order_by=-run_after&limit=1")["dag_runs"][0]["dag_run_id"]
    assert _api(airflow, f"dags/{DAG}/dagRuns/{run_id}/taskInstances/extract")["try_number"] == 1


async def test_airflow_jobs_outside_config_or_grant_are_refused(
    make_gateway: GatewayFactory, airflow: AirflowServer
) -> None:
    await unknown_and_ungranted_jobs_are_refused(_start(make_gateway, airflow), _counter(airflow))


async def test_a_full_airflow_rerun_with_a_repeated_reason_triggers_one_dag_run(
    tmp_path: Path, airflow: AirflowServer
) -> None:
    def secrets(name: str) -> SecretValue:
        assert name == "af-pw"
        return SecretValue(name, AIRFLOW_PASSWORD.encode())

    settings = AirflowSettings(
        kind="airflow",
        url=airflow.url,
        username=AIRFLOW_USER,
        password="secret://af-pw",
        allow_private_network=True,
    )
    ops = build_ops_toolset(
        {"af": settings}, {"flaky": JobSettings(orchestrator="af", id=DAG)}, tmp_path, secrets
    )
    tool = ops.tools["ops.rerun_job"]
    args = tool.input_model.model_validate({"job": "flaky", "mode": "full", "reason": "backfill 2026-11-24"})
    count_runs = _counter(airflow)
    before = await count_runs()
    ctx = ToolContext(principal=Principal(agent="agent-a", token_id="t"), call_id="c1")
    first = await tool.run(ctx, args)
    second = await tool.run(ctx, args)
    assert second["run_id"] == first["run_id"] and second["already_launched"] is True
    assert await count_runs() == before + 1
    assert ops.stop is not None
    await ops.stop()
