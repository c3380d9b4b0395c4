"""The Dagster adapter: union/error mapping over httpx.MockTransport, and the run lifecycle against the
Dagster GraphQL emulator served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from graphql import parse, validate

from conftest import GatewayFactory, RunningGateway, connect, free_port
from mcp_gateway.connectors.orchestrators import dagster as adapter_module
from mcp_gateway.connectors.orchestrators.base import (
    JobNotFound,
    OrchestratorError,
    OrchestratorUnavailable,
    RunConflict,
    RunInfo,
)
from mcp_gateway.connectors.orchestrators.config import DagsterSettings, JobSettings
from mcp_gateway.connectors.orchestrators.dagster import IDEMPOTENCY_TAG, DagsterJobRef, DagsterOrchestrator
from mcp_gateway.demo.emulators import RunningServer, serve_in_thread
from mcp_gateway.demo.emulators.dagster import DagsterEmulator
from mcp_gateway.demo.emulators.dagster_runs import DagsterJob
from mcp_gateway.tools.ops import build_ops_toolset
from mcp_gateway.types import SecretValue

pytestmark = pytest.mark.anyio

TOKEN = "user:dagster-cloud-s3cr3t-4411"
NIGHTLY = "etl/analytics/nightly"
FLAKY = "etl/analytics/flaky"


def _resolver(value: str = TOKEN) -> Callable[[str], SecretValue]:
    def resolve(name: str) -> SecretValue:
        assert name == "dagster-token"
        return SecretValue(name, value.encode())

    return resolve


def _settings(url: str = "http://dagster.test", token: bool = True) -> DagsterSettings:
    return DagsterSettings(
        kind="dagster", url=url, token="secret://dagster-token" if token else None, allow_private_network=True
    )


def _run(run_id: str = "r1", status: str = "QUEUED", job: str = "nightly") -> dict[str, Any]:
    origin = {"repositoryLocationName": "etl", "repositoryName": "analytics"}
    return {
        "__typename": "Run",
        "runId": run_id,
        "status": status,
        "jobName": job,
        "repositoryOrigin": origin,
    }


def _graphql_handler(answers: dict[str, Any]) -> Callable[[httpx.Request], httpx.Response]:
    """Answer each operation (by its root field) with ``{"data": {field: answers[field]}}``."""

    def handler(request: httpx.Request) -> httpx.Response:
        query = json.loads(request.content)["query"]
        for field, value in answers.items():
            if f"{field}(" in query:
                return httpx.Response(200, json={"data": {field: value}})
        return httpx.Response(200, json={"data": {"runsOrError": {"__typename": "Runs", "results": []}}})

    return handler


def _mock(handler: Callable[[httpx.Request], httpx.Response], token: bool = True) -> DagsterOrchestrator:
    return DagsterOrchestrator(_settings(token=token), _resolver(), transport=httpx.MockTransport(handler))


# ---- wire shape and error mapping (MockTransport) ------------------------------------------------


def test_every_operation_the_adapter_sends_validates_against_the_emulated_dagster_schema() -> None:
    schema = DagsterEmulator([]).schema
    for query in (
        adapter_module.LAUNCH_RUN,
        adapter_module.LAUNCH_REEXECUTION,
        adapter_module.RUN_OR_ERROR,
        adapter_module.RUNS_OR_ERROR,
        adapter_module.LOGS_FOR_RUN,
    ):
        assert validate(schema, parse(query)) == []


@pytest.mark.parametrize(
    ("launch", "error"),
    [
        (
            {"__typename": "PipelineNotFoundError", "message": "Could not find Pipeline etl.analytics.x"},
            JobNotFound,
        ),
        ({"__typename": "JobNotFoundError", "message": "no such job"}, JobNotFound),
        ({"__typename": "RunConflict", "message": "run id collision"}, RunConflict),
        ({"__typename": "PythonError", "message": "boom", "stack": []}, OrchestratorUnavailable),
        ({"__typename": "InvalidStepError", "invalidStepKey": "nope"}, OrchestratorError),
        (
            {"__typename": "RunConfigValidationInvalid", "errors": [{"message": "bad config"}]},
            OrchestratorError,
        ),
        ({"__typename": "UnauthorizedError", "message": "not allowed"}, OrchestratorError),
        ({"__typename": "LaunchRunSuccess"}, OrchestratorUnavailable),
        ({"no": "typename"}, OrchestratorUnavailable),
    ],
)
async def test_each_launch_result_union_member_maps_to_its_base_error(
    launch: dict[str, Any], error: type[OrchestratorError]
) -> None:
    adapter = _mock(_graphql_handler({"launchRun": launch}))
    with pytest.raises(error) as caught:
        await adapter.rerun(NIGHTLY, "full", "k")
    assert type(caught.value) is error
    await adapter.aclose()


@pytest.mark.parametrize(
    ("response", "error", "text"),
    [
        (httpx.Response(401, json={"errors": [{"message": "Unauthorized"}]}), OrchestratorError, "(401)"),
        (httpx.Response(403, text="forbidden"), OrchestratorError, "(403)"),
        (httpx.Response(503, text="down"), OrchestratorUnavailable, "503"),
        (httpx.Response(200, text="<html>"), OrchestratorUnavailable, "without a graphql result"),
        (
            httpx.Response(400, json={"errors": [{"message": f'Cannot query field "x" ({TOKEN})'}]}),
            OrchestratorUnavailable,
            "rejected the gateway's query",
        ),
    ],
)
async def test_http_level_failures_map_to_base_errors_without_the_token(
    response: httpx.Response, error: type[OrchestratorError], text: str
) -> None:
    adapter = _mock(lambda request: response)
    with pytest.raises(error) as caught:
        await adapter.status(NIGHTLY, "r1")
    assert text in str(caught.value)
    assert TOKEN not in str(caught.value)
    await adapter.aclose()


async def test_the_token_goes_in_the_dagster_cloud_header_only_when_configured() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": {"runOrError": _run("r1", "STARTED")}})

    with_token, without = _mock(handler), _mock(handler, token=False)
    assert (await with_token.status(NIGHTLY, "r1")).state == "running"
    await without.status(NIGHTLY, "r1")
    assert seen[0].headers["dagster-cloud-api-token"] == TOKEN
    assert "dagster-cloud-api-token" not in seen[1].headers
    assert seen[0].url.path == "/graphql"
    await with_token.aclose()
    await without.aclose()


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("QUEUED", "pending"),
        ("NOT_STARTED", "pending"),
        ("STARTING", "pending"),
        ("STARTED", "running"),
        ("CANCELING", "running"),
        ("SUCCESS", "success"),
        ("FAILURE", "failed"),
        ("CANCELED", "cancelled"),
        ("SOMETHING_NEW", "unknown"),
    ],
)
async def test_run_statuses_map_to_normalised_states(status: str, state: str) -> None:
    adapter = _mock(_graphql_handler({"runOrError": _run("r9", status)}))
    info = await adapter.status(NIGHTLY, "r9")
    assert (info.state, info.native_state, info.url) == (state, status, "http://dagster.test/runs/r9")
    await adapter.aclose()


async def test_a_run_of_a_same_named_job_in_another_location_is_not_found() -> None:
    other = _run("r2", "SUCCESS") | {
        "repositoryOrigin": {"repositoryLocationName": "x", "repositoryName": "y"}
    }
    adapter = _mock(_graphql_handler({"runOrError": other}))
    with pytest.raises(JobNotFound, match="not a run of job"):
        await adapter.status(NIGHTLY, "r2")
    await adapter.aclose()


@pytest.mark.parametrize("job_id", ["nightly", "a/b/c/d", "a//c", ""])
def test_a_malformed_job_id_is_a_clear_error(job_id: str) -> None:
    with pytest.raises(OrchestratorError, match="location/repository/job"):
        DagsterJobRef(job_id)


def test_a_two_part_job_id_uses_the_default_repository() -> None:
    assert DagsterJobRef("etl/nightly").selector() == {
        "repositoryLocationName": "etl",
        "repositoryName": "__repository__",
        "jobName": "nightly",
    }


# ---- against the emulator over real HTTP ---------------------------------------------------------


@pytest.fixture
def emulator() -> Iterator[tuple[DagsterEmulator, RunningServer]]:
    emu = DagsterEmulator(
        [
            DagsterJob("etl", "analytics", "nightly"),
            DagsterJob("etl", "analytics", "flaky", fail_first_run=True),
        ],
        token=TOKEN,
    )
    server = serve_in_thread(emu.app, free_port())
    yield emu, server
    server.stop()


async def _until_done(adapter: DagsterOrchestrator, job: str, run_id: str) -> RunInfo:
    """Poll (each read advances the emulator's state machine) with a bounded wait."""
    with anyio.fail_after(10):
        while True:
            info = await adapter.status(job, run_id)
            if info.state in ("success", "failed", "cancelled"):
                return info


@pytest.mark.e2e
async def test_a_full_run_goes_from_queued_to_success(
    emulator: tuple[DagsterEmulator, RunningServer],
) -> None:
    emu, server = emulator
    adapter = DagsterOrchestrator(_settings(server.url), _resolver())
    started = await adapter.rerun(NIGHTLY, "full", "key-full")
    assert (started.state, started.native_state) == ("pending", "QUEUED")
    done = await _until_done(adapter, NIGHTLY, started.run_id)
    assert done.state == "success"
    assert done.started_at and done.ended_at
    assert emu.runs[started.run_id].tags[IDEMPOTENCY_TAG] == "key-full"
    await adapter.aclose()


@pytest.mark.e2e
async def test_the_same_key_returns_the_first_run_instead_of_launching_again(
    emulator: tuple[DagsterEmulator, RunningServer],
) -> None:
    emu, server = emulator
    adapter = DagsterOrchestrator(_settings(server.url), _resolver())
    first = await adapter.rerun(NIGHTLY, "full", "same-key")
    again = await adapter.rerun(NIGHTLY, "full", "same-key")
    other = await adapter.rerun(NIGHTLY, "full", "other-key")
    assert again.run_id == first.run_id
    assert other.run_id != first.run_id
    assert emu.operations.count("launchRun") == 2
    await adapter.aclose()


@pytest.mark.e2e
async def test_a_failed_run_is_reexecuted_from_failure_and_then_succeeds(
    emulator: tuple[DagsterEmulator, RunningServer],
) -> None:
    emu, server = emulator
    adapter = DagsterOrchestrator(_settings(server.url), _resolver())
    first = await adapter.rerun(FLAKY, "full", "k1")
    assert (await _until_done(adapter, FLAKY, first.run_id)).state == "failed"

    context = await adapter.failure_context(FLAKY)
    assert [run.run_id for run in context.failed_runs] == [first.run_id]
    assert context.failed_runs[0].message == "KeyError: 'order_id' (raised in op 'transform')"
    assert any("[transform]" in line and "KeyError" in line for line in context.log_tail)

    retry = await adapter.rerun(FLAKY, "failed_only", "k2")
    assert retry.run_id != first.run_id
    child = emu.runs[retry.run_id]
    assert (child.parent, child.steps) == (first.run_id, ("transform", "load"))
    assert child.tags["dagster/is_resume_retry"] == "true" and child.tags[IDEMPOTENCY_TAG] == "k2"
    assert (await _until_done(adapter, FLAKY, retry.run_id)).state == "success"

    with pytest.raises(RunConflict, match="is success"):
        await adapter.rerun(FLAKY, "failed_only", "k3")
    await adapter.aclose()


@pytest.mark.e2e
async def test_failed_only_without_any_run_is_a_conflict(
    emulator: tuple[DagsterEmulator, RunningServer],
) -> None:
    emu, server = emulator
    adapter = DagsterOrchestrator(_settings(server.url), _resolver())
    with pytest.raises(RunConflict, match="no run"):
        await adapter.rerun(NIGHTLY, "failed_only", "k")
    assert "launchRunReexecution" not in emu.operations
    await adapter.aclose()


@pytest.mark.e2e
async def test_an_unknown_job_or_run_is_job_not_found(
    emulator: tuple[DagsterEmulator, RunningServer],
) -> None:
    _, server = emulator
    adapter = DagsterOrchestrator(_settings(server.url), _resolver())
    with pytest.raises(JobNotFound, match="PipelineNotFoundError"):
        await adapter.rerun("etl/analytics/missing", "full", "k")
    with pytest.raises(JobNotFound, match="RunNotFoundError"):
        await adapter.status(NIGHTLY, "no-such-run")
    await adapter.aclose()


@pytest.mark.e2e
async def test_a_bad_token_is_a_clear_error_that_does_not_carry_the_token(
    emulator: tuple[DagsterEmulator, RunningServer],
) -> None:
    emu, server = emulator
    wrong = "user:wrong-dagster-token-0000"
    adapter = DagsterOrchestrator(_settings(server.url), _resolver(wrong))
    with pytest.raises(OrchestratorError) as caught:
        await adapter.rerun(NIGHTLY, "full", "k")
    assert "refused the credentials (401)" in str(caught.value)
    assert wrong not in str(caught.value) and TOKEN not in str(caught.value)
    assert emu.runs == {}
    await adapter.aclose()


@pytest.mark.e2e
async def test_the_emulator_rejects_a_query_that_does_not_match_dagsters_schema(
    emulator: tuple[DagsterEmulator, RunningServer],
) -> None:
    _, server = emulator
    headers = {"Dagster-Cloud-Api-Token": TOKEN}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        bad = await http.post("/graphql", json={"query": "{ runOrError(runId: 1) { ... on Run { nope } } }"})
        config = await http.post(
            "/graphql",
            json={
                "query": adapter_module.LAUNCH_RUN,
                "variables": {
                    "executionParams": {
                        "selector": DagsterJobRef(NIGHTLY).selector(),
                        "runConfigData": {"opz": {}},
                    }
                },
            },
        )
    assert bad.status_code == 400
    assert "nope" in bad.json()["errors"][0]["message"]
    result = config.json()["data"]["launchRun"]
    assert result["__typename"] == "RunConfigValidationInvalid"
    assert "opz" in result["errors"][0]["message"]


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
async def test_an_agent_reexecutes_a_failed_dagster_job_from_failure_through_the_gateway(
    emulator: tuple[DagsterEmulator, RunningServer], make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    emu, server = emulator
    gateway: list[RunningGateway] = []
    toolset = build_ops_toolset(
        {"dagster": _settings(server.url)},
        {"orders_assets": JobSettings(orchestrator="dagster", id=FLAKY)},
        tmp_path,
        lambda name: gateway[0].runtime.gateway.secrets.resolve(name),
    )
    gateway.append(
        make_gateway(OPS_POLICY, secrets={"dagster-token": TOKEN}, upstreams={}, toolsets=[toolset])
    )
    gw = gateway[0]

    async def state(client: Any, run_id: str) -> str:
        with anyio.fail_after(10):
            while True:
                args = {"job": "orders_assets", "run_id": run_id}
                status = _text_json(await client.call_tool("ops.get_job_status", args))
                if status["state"] in ("success", "failed"):
                    return str(status["state"])

    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        first = _text_json(
            await client.call_tool(
                "ops.rerun_job", {"job": "orders_assets", "mode": "full", "reason": "INC-9"}
            )
        )
        assert await state(client, first["run_id"]) == "failed"
        context = _text_json(await client.call_tool("ops.get_failure_context", {"job": "orders_assets"}))
        assert "KeyError" in context["failed_runs"][0]["message"]
        args = {"job": "orders_assets", "mode": "failed_only", "reason": "INC-9 fixed the op"}
        retry = _text_json(await client.call_tool("ops.rerun_job", args))
        assert await state(client, retry["run_id"]) == "success"
        unknown = await client.call_tool("ops.get_job_status", {"job": "orders_assets", "run_id": "nope"})
    assert emu.runs[retry["run_id"]].parent == first["run_id"]
    assert unknown.is_error and "RunNotFoundError" in unknown.content[0].text
    assert TOKEN not in json.dumps([r.detail for r in gw.audit()], default=str)
