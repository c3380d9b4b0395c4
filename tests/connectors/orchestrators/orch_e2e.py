"""Scenarios shared by the Prefect and Airflow end-to-end tests (the gateway drives the ``ops`` tools)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp import Client
from mcp.shared.exceptions import MCPError

from conftest import RunningGateway, connect

TERMINAL = {"success", "failed", "cancelled"}

POLICY = """
version: 1
agents:
  agent-a:
    grants:
      - {id: ops-read, tool: "ops.get_*"}
      - {id: ops-rerun, tool: ops.rerun_job, args: {job: {in: [flaky]}}}
  agent-b:
    grants:
      - {id: b-read, tool: ops.get_job_status}
runbooks:
  flaky: "page the data team if the second try fails too"
"""


async def call(client: Client, tool: str, args: dict[str, Any]) -> tuple[bool, dict[str, Any], str]:
    """(is_error, structured result, text) of one tool call."""
    result = await client.call_tool(tool, args)
    text = "".join(getattr(block, "text", "") for block in result.content)
    return bool(result.is_error), dict(result.structured_content or {}), text


async def wait_terminal(client: Client, run_id: str, timeout: float = 90) -> dict[str, Any]:
    """Poll ``ops.get_job_status`` until the run ends (bounded)."""
    with anyio.fail_after(timeout):
        while True:
            is_error, status, text = await call(
                client, "ops.get_job_status", {"job": "flaky", "run_id": run_id}
            )
            assert not is_error, text
            if status["state"] in TERMINAL:
                return status
            await anyio.sleep(0.5)


async def failed_run_is_rerun_to_success(
    gw: RunningGateway,
    client: Client,
    count_runs: Callable[[], Awaitable[int]],
    executions: Callable[[str], Awaitable[int]],
    expected_error: str,
) -> None:
    """A full run fails; ``failed_only`` reruns it to success; a duplicate reason launches nothing.

    Args:
        count_runs: how many runs the orchestrator has for the job.
        executions: how many times a run was executed (Prefect ``run_count``, Airflow's try number).
        expected_error: text the failure context must contain.
    """
    is_error, first, text = await call(
        client, "ops.rerun_job", {"job": "flaky", "mode": "full", "reason": "initial load of the day"}
    )
    assert not is_error, text
    failed = await wait_terminal(client, first["run_id"])
    assert failed["state"] == "failed"

    is_error, context, text = await call(client, "ops.get_failure_context", {"job": "flaky"})
    assert not is_error, text
    assert context["failed_runs"][0]["run_id"] == first["run_id"]
    assert expected_error in json.dumps(context)
    assert context["runbook"] == "page the data team if the second try fails too"

    runs_before = await count_runs()
    reason = {"job": "flaky", "mode": "failed_only", "reason": "INC-7 source table restored"}
    is_error, retried, text = await call(client, "ops.rerun_job", reason)
    assert not is_error, text
    assert (retried["run_id"], retried["already_launched"]) == (first["run_id"], False)
    done = await wait_terminal(client, retried["run_id"])
    assert done["state"] == "success"
    assert await executions(first["run_id"]) == 2

    duplicate_reason = {**reason, "reason": "  inc-7 SOURCE table restored"}
    is_error, again, text = await call(client, "ops.rerun_job", duplicate_reason)
    assert not is_error, text
    assert (again["run_id"], again["already_launched"], again["state"]) == (first["run_id"], True, "success")
    assert await count_runs() == runs_before
    assert await executions(first["run_id"]) == 2

    outcomes = [r for r in gw.audit() if r.kind == "outcome" and r.tool == "ops.rerun_job"]
    assert [o.detail["facts"]["run_id"] for o in outcomes] == [first["run_id"]] * 3
    assert [o.detail["facts"]["already_launched"] for o in outcomes] == [False, False, True]


async def refused(client: Client, tool: str, args: dict[str, Any]) -> str:
    """The refusal text of a call that must not run (a tool error or a protocol error); fails if it ran."""
    try:
        is_error, _, text = await call(client, tool, args)
    except MCPError as exc:
        return str(exc)
    assert is_error, f"`{tool}` ran: {text}"
    return text


async def unknown_and_ungranted_jobs_are_refused(
    gw: RunningGateway, count_runs: Callable[[], Awaitable[int]]
) -> None:
    """An unconfigured job is a tool error; a job outside the grant and an ungranted agent never run."""
    before = await count_runs()
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        text = await refused(client, "ops.get_job_status", {"job": "nope", "run_id": "x"})
        assert "job `nope` is not configured" in text
        await refused(
            client, "ops.rerun_job", {"job": "other", "mode": "full", "reason": "outside the grant"}
        )
    async with connect(gw.url, gw.tokens["agent-b"]) as client:
        await refused(client, "ops.rerun_job", {"job": "flaky", "mode": "full", "reason": "not granted"})
    assert await count_runs() == before
