"""The dbt Cloud adapter: error mapping over httpx.MockTransport, and the run lifecycle against the
dbt Cloud emulator served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from conftest import GatewayFactory, RunningGateway, connect, free_port
from mcp_gateway.connectors.orchestrators.base import (
    JobNotFound,
    OrchestratorError,
    OrchestratorUnavailable,
    RunConflict,
    RunInfo,
)
from mcp_gateway.connectors.orchestrators.config import DbtCloudSettings, JobSettings
from mcp_gateway.connectors.orchestrators.dbt_cloud import DbtCloudOrchestrator
from mcp_gateway.demo.emulators import RunningServer, serve_in_thread
from mcp_gateway.demo.emulators.dbt_cloud import DbtCloudEmulator, DbtJob
from mcp_gateway.tools.ops import build_ops_toolset
from mcp_gateway.types import SecretValue

pytestmark = pytest.mark.anyio

TOKEN = "dbtc_s3cr3t-token-value-9f2"
ACCOUNT = 42
NIGHTLY, FLAKY = 101, 202


def _resolver(value: str = TOKEN) -> Callable[[str], SecretValue]:
    def resolve(name: str) -> SecretValue:
        assert name == "dbt-token"
        return SecretValue(name, value.encode())

    return resolve


def _settings(url: str = "http://dbt.test", account_id: int = ACCOUNT) -> DbtCloudSettings:
    return DbtCloudSettings(
        kind="dbt_cloud",
        url=url,
        account_id=account_id,
        token="secret://dbt-token",
        allow_private_network=True,
    )


def _envelope(data: Any, code: int = 200, message: str = "Success!") -> dict[str, Any]:
    status = {"code": code, "is_success": code < 400, "user_message": message, "developer_message": ""}
    return {"status": status, "data": data}


def _run(run_id: int = 7, status: int = 1, job: int = NIGHTLY) -> dict[str, Any]:
    return {"id": run_id, "status": status, "job_definition_id": job, "href": f"https://x/runs/{run_id}/"}


def _mock(handler: Callable[[httpx.Request], httpx.Response]) -> DbtCloudOrchestrator:
    return DbtCloudOrchestrator(_settings(), _resolver(), transport=httpx.MockTransport(handler))


# ---- error mapping and wire shape (MockTransport) ------------------------------------------------


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(401, json=_envelope(None, 401, "Invalid token.")), OrchestratorError),
        (httpx.Response(403, json=_envelope(None, 403, "Forbidden.")), OrchestratorError),
        (
            httpx.Response(404, json=_envelope(None, 404, "The requested resource was not found.")),
            JobNotFound,
        ),
        (httpx.Response(409, json=_envelope(None, 409, "Run in progress.")), RunConflict),
        (httpx.Response(400, json=_envelope({"cause": ["required"]}, 400, "Invalid.")), OrchestratorError),
        (httpx.Response(429, json=_envelope(None, 429, "Slow down.")), OrchestratorUnavailable),
        (httpx.Response(502, text="<html>bad gateway</html>"), OrchestratorUnavailable),
        (httpx.Response(200, text="not json"), OrchestratorUnavailable),
        (httpx.Response(200, json={"data": _run()}), OrchestratorUnavailable),
        (httpx.Response(200, json=_envelope({"id": "x"})), OrchestratorUnavailable),
    ],
)
async def test_each_documented_failure_maps_to_its_base_error(
    response: httpx.Response, error: type[OrchestratorError]
) -> None:
    adapter = _mock(lambda request: response)
    with pytest.raises(error) as caught:
        await adapter.rerun(str(NIGHTLY), "full", "key-1")
    assert type(caught.value) is error
    assert TOKEN not in str(caught.value)
    await adapter.aclose()


async def test_a_server_message_echoing_the_token_is_scrubbed_from_the_error() -> None:
    adapter = _mock(lambda request: httpx.Response(401, json=_envelope(None, 401, f"bad token {TOKEN}")))
    with pytest.raises(OrchestratorError) as caught:
        await adapter.status(str(NIGHTLY), "7")
    assert TOKEN not in str(caught.value)
    assert "401" in str(caught.value)
    await adapter.aclose()


async def test_network_failure_is_unavailable_and_names_no_credential() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    adapter = _mock(refuse)
    with pytest.raises(OrchestratorUnavailable, match="unreachable") as caught:
        await adapter.status(str(NIGHTLY), "7")
    assert TOKEN not in str(caught.value)
    await adapter.aclose()


async def test_full_run_posts_the_cause_with_the_key_and_a_token_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=_envelope(_run(55)))

    adapter = _mock(handler)
    info = await adapter.rerun(str(NIGHTLY), "full", "ticket-123")
    assert info == RunInfo("55", "pending", "1", url="https://x/runs/55/")
    (request,) = seen
    assert request.method == "POST"
    assert request.url.path == f"/api/v2/accounts/{ACCOUNT}/jobs/{NIGHTLY}/run/"
    assert request.headers["authorization"] == f"Token {TOKEN}"
    assert "ticket-123" in json.loads(request.content)["cause"]
    await adapter.aclose()


@pytest.mark.parametrize(
    ("code", "state"),
    [
        (1, "pending"),
        (2, "pending"),
        (3, "running"),
        (10, "success"),
        (20, "failed"),
        (30, "cancelled"),
        (99, "unknown"),
    ],
)
async def test_run_status_codes_map_to_normalised_states(code: int, state: str) -> None:
    adapter = _mock(lambda request: httpx.Response(200, json=_envelope(_run(9, code))))
    info = await adapter.status(str(NIGHTLY), "9")
    assert (info.state, info.native_state) == (state, str(code))
    await adapter.aclose()


async def test_status_of_a_run_of_another_job_is_not_found() -> None:
    adapter = _mock(lambda request: httpx.Response(200, json=_envelope(_run(9, 10, job=999))))
    with pytest.raises(JobNotFound, match="not a run of job"):
        await adapter.status(str(NIGHTLY), "9")
    await adapter.aclose()


async def test_failed_only_when_the_latest_run_succeeded_is_a_conflict_and_posts_nothing() -> None:
    methods: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        methods.append(request.method)
        return httpx.Response(200, json=_envelope([_run(8, 10)]))

    adapter = _mock(handler)
    with pytest.raises(RunConflict, match="latest run 8 is success"):
        await adapter.rerun(str(NIGHTLY), "failed_only", "k")
    assert methods == ["GET"]
    await adapter.aclose()


async def test_a_non_numeric_job_id_is_refused_before_any_request() -> None:
    adapter = _mock(lambda request: pytest.fail("no request expected"))
    with pytest.raises(OrchestratorError, match="numeric job id"):
        await adapter.rerun("orders/nightly", "full", "k")
    await adapter.aclose()


# ---- against the emulator over real HTTP ---------------------------------------------------------


@pytest.fixture
def emulator() -> Iterator[tuple[DbtCloudEmulator, RunningServer]]:
    emu = DbtCloudEmulator(
        account_id=ACCOUNT,
        token=TOKEN,
        jobs={
            NIGHTLY: DbtJob("nightly"),
            FLAKY: DbtJob(
                "flaky", steps=("dbt deps", "dbt seed", "dbt build"), fail_first_run=True, failing_step=2
            ),
        },
    )
    server = serve_in_thread(emu.app, free_port())
    yield emu, server
    server.stop()


async def _until_done(adapter: DbtCloudOrchestrator, job: int, run_id: str) -> RunInfo:
    """Poll (each read advances the emulator's state machine) with a bounded wait."""
    with anyio.fail_after(10):
        while True:
            info = await adapter.status(str(job), run_id)
            if info.state in ("success", "failed", "cancelled"):
                return info


@pytest.mark.e2e
async def test_a_full_run_goes_from_queued_to_success(
    emulator: tuple[DbtCloudEmulator, RunningServer],
) -> None:
    emu, server = emulator
    adapter = DbtCloudOrchestrator(_settings(server.url), _resolver())
    started = await adapter.rerun(str(NIGHTLY), "full", "key-full")
    assert started.state == "pending"
    done = await _until_done(adapter, NIGHTLY, started.run_id)
    assert (done.state, done.native_state) == ("success", "10")
    assert done.started_at and done.ended_at
    assert "key-full" in emu.runs[int(started.run_id)].cause
    await adapter.aclose()


@pytest.mark.e2e
async def test_the_emulators_run_links_name_its_own_address_not_dbt_clouds(
    emulator: tuple[DbtCloudEmulator, RunningServer],
) -> None:
    _, server = emulator
    adapter = DbtCloudOrchestrator(_settings(server.url), _resolver())
    started = await adapter.rerun(str(NIGHTLY), "full", "key-link")
    assert started.url is not None and started.url.startswith(server.url + "/deploy/")
    assert "getdbt.com" not in started.url
    await adapter.aclose()


@pytest.mark.e2e
async def test_a_failed_run_is_rerun_from_failure_and_then_succeeds(
    emulator: tuple[DbtCloudEmulator, RunningServer],
) -> None:
    emu, server = emulator
    adapter = DbtCloudOrchestrator(_settings(server.url), _resolver())
    first = await adapter.rerun(str(FLAKY), "full", "k1")
    failed = await _until_done(adapter, FLAKY, first.run_id)
    assert failed.state == "failed"
    assert failed.message and "relation raw.orders does not exist" in failed.message

    context = await adapter.failure_context(str(FLAKY))
    assert [run.run_id for run in context.failed_runs] == [first.run_id]
    assert any("relation raw.orders does not exist" in line for line in context.log_tail)

    retry = await adapter.rerun(str(FLAKY), "failed_only", "k2")
    assert retry.run_id != first.run_id
    assert emu.runs[int(retry.run_id)].rerun_of == int(first.run_id)
    assert emu.runs[int(retry.run_id)].steps == ("dbt build",)
    assert (await _until_done(adapter, FLAKY, retry.run_id)).state == "success"

    with pytest.raises(RunConflict):
        await adapter.rerun(str(FLAKY), "failed_only", "k3")
    await adapter.aclose()


@pytest.mark.e2e
async def test_an_unknown_job_is_job_not_found(emulator: tuple[DbtCloudEmulator, RunningServer]) -> None:
    _, server = emulator
    adapter = DbtCloudOrchestrator(_settings(server.url), _resolver())
    with pytest.raises(JobNotFound, match="`999`"):
        await adapter.rerun("999", "full", "k")
    with pytest.raises(JobNotFound):
        await adapter.status(str(NIGHTLY), "424242")
    await adapter.aclose()


@pytest.mark.e2e
async def test_a_bad_token_is_a_clear_error_that_does_not_carry_the_token(
    emulator: tuple[DbtCloudEmulator, RunningServer],
) -> None:
    emu, server = emulator
    wrong = "dbtc_wrong-token-value-77"
    adapter = DbtCloudOrchestrator(_settings(server.url), _resolver(wrong))
    with pytest.raises(OrchestratorError) as caught:
        await adapter.rerun(str(NIGHTLY), "full", "k")
    assert "refused the credentials (401)" in str(caught.value)
    assert wrong not in str(caught.value) and TOKEN not in str(caught.value)
    assert emu.runs == {}
    await adapter.aclose()


@pytest.mark.e2e
async def test_another_account_is_refused(emulator: tuple[DbtCloudEmulator, RunningServer]) -> None:
    _, server = emulator
    adapter = DbtCloudOrchestrator(_settings(server.url, account_id=ACCOUNT + 1), _resolver())
    with pytest.raises(OrchestratorError, match="403"):
        await adapter.failure_context(str(NIGHTLY))
    await adapter.aclose()


@pytest.mark.e2e
async def test_the_emulator_requires_a_cause_like_dbt_cloud(
    emulator: tuple[DbtCloudEmulator, RunningServer],
) -> None:
    _, server = emulator
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        response = await http.post(f"/api/v2/accounts/{ACCOUNT}/jobs/{NIGHTLY}/run/", json={})
    assert response.status_code == 400
    body = response.json()
    assert body["status"]["is_success"] is False
    assert body["data"] == {"cause": ["This field is required."]}


# ---- through the gateway: the ops toolset over this adapter, driven by the MCP SDK client ----------

OPS_POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - id: a-ops
        tool: "ops.*"
"""


def _text_json(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    return json.loads(result.content[0].text)


@pytest.mark.e2e
async def test_an_agent_reruns_a_failed_dbt_job_from_failure_through_the_gateway(
    emulator: tuple[DbtCloudEmulator, RunningServer], make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    emu, server = emulator
    gateway: list[RunningGateway] = []
    toolset = build_ops_toolset(
        {"dbt": _settings(server.url)},
        {"orders_nightly": JobSettings(orchestrator="dbt", id=str(FLAKY))},
        tmp_path / "ops",
        lambda name: gateway[0].runtime.gateway.secrets.resolve(name),
    )
    (tmp_path / "ops").mkdir()
    gateway.append(make_gateway(OPS_POLICY, secrets={"dbt-token": TOKEN}, upstreams={}, toolsets=[toolset]))
    gw = gateway[0]

    async def state(client: Any, run_id: str) -> str:
        with anyio.fail_after(10):
            while True:
                args = {"job": "orders_nightly", "run_id": run_id}
                status = _text_json(await client.call_tool("ops.get_job_status", args))
                if status["state"] in ("success", "failed"):
                    return str(status["state"])

    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        args = {"job": "orders_nightly", "mode": "full", "reason": "INC-1 nightly load"}
        first = _text_json(await client.call_tool("ops.rerun_job", args))
        assert await state(client, first["run_id"]) == "failed"
        context = _text_json(await client.call_tool("ops.get_failure_context", {"job": "orders_nightly"}))
        assert context["failed_runs"][0]["run_id"] == first["run_id"]
        retry_args = {"job": "orders_nightly", "mode": "failed_only", "reason": "INC-1 fixed raw.orders"}
        retry = _text_json(await client.call_tool("ops.rerun_job", retry_args))
        again = _text_json(await client.call_tool("ops.rerun_job", retry_args))
        assert await state(client, retry["run_id"]) == "success"
    assert again["run_id"] == retry["run_id"] and again["already_launched"] is True
    assert emu.runs[int(retry["run_id"])].rerun_of == int(first["run_id"])
    assert len(emu.runs) == 2
    outcomes = [r for r in gw.audit() if r.kind == "outcome" and r.tool == "ops.rerun_job"]
    assert [r.detail.get("facts", {}).get("run_id") for r in outcomes] == [
        first["run_id"],
        retry["run_id"],
        retry["run_id"],
    ]
    assert TOKEN not in json.dumps([r.detail for r in gw.audit()], default=str)


@pytest.mark.e2e
async def test_a_bad_dbt_token_reaches_the_agent_as_a_tool_error_without_the_token(
    emulator: tuple[DbtCloudEmulator, RunningServer], make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    _, server = emulator
    gateway: list[RunningGateway] = []
    toolset = build_ops_toolset(
        {"dbt": _settings(server.url)},
        {"orders_nightly": JobSettings(orchestrator="dbt", id=str(NIGHTLY))},
        tmp_path,
        lambda name: gateway[0].runtime.gateway.secrets.resolve(name),
    )
    wrong = "dbtc_wrong-token-value-77"
    gateway.append(make_gateway(OPS_POLICY, secrets={"dbt-token": wrong}, upstreams={}, toolsets=[toolset]))
    gw = gateway[0]
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        args = {"job": "orders_nightly", "mode": "full", "reason": "INC-2 rerun"}
        result = await client.call_tool("ops.rerun_job", args)
    assert result.is_error
    assert "refused the credentials (401)" in result.content[0].text
    assert wrong not in result.content[0].text
