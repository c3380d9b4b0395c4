"""The ``ops`` toolset against an in-memory orchestrator: job gating, idempotency, audit facts, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import TypeAdapter, ValidationError

from mcp_gateway.connectors.orchestrators.base import (
    FailureContext,
    JobNotFound,
    RerunMode,
    RunConflict,
    RunInfo,
)
from mcp_gateway.connectors.orchestrators.config import (
    AirflowSettings,
    JobSettings,
    OrchestratorSettings,
    PrefectSettings,
)
from mcp_gateway.connectors.orchestrators.idempotency import IdempotencyStore, rerun_key
from mcp_gateway.errors import ConfigError
from mcp_gateway.tools.base import ToolContext, ToolFailure, Toolset
from mcp_gateway.tools.ops import STORE_FILE, build_ops_toolset
from mcp_gateway.types import Principal, SecretValue


class FakeOrchestrator:
    """Counts launches; runs are ``run-<n>``; ``fail_with`` makes every call raise."""

    kind = "prefect"

    def __init__(self) -> None:
        self.launches: list[tuple[str, str, str]] = []
        self.fail_with: Exception | None = None
        self.closed = False

    async def rerun(self, job_id: str, mode: RerunMode, idempotency_key: str) -> RunInfo:
        if self.fail_with:
            raise self.fail_with
        await anyio.sleep(0)  # let a concurrent duplicate interleave if the toolset allowed it
        self.launches.append((job_id, mode, idempotency_key))
        return RunInfo(run_id=f"run-{len(self.launches)}", state="pending", native_state="SCHEDULED")

    async def status(self, job_id: str, run_id: str) -> RunInfo:
        if self.fail_with:
            raise self.fail_with
        return RunInfo(run_id=run_id, state="running", native_state="RUNNING")

    async def failure_context(self, job_id: str, limit: int = 3) -> FailureContext:
        failed = RunInfo(run_id="run-0", state="failed", native_state="FAILED", message="orders_raw missing")
        return FailureContext(job=job_id, failed_runs=(failed,), log_tail=("ERROR orders_raw missing",))

    async def aclose(self) -> None:
        self.closed = True


ORCHESTRATORS: dict[str, OrchestratorSettings] = {
    "pf": PrefectSettings(kind="prefect", url="http://pf.test/api")
}
JOBS = {"nightly": JobSettings(orchestrator="pf", id="flaky-orders/nightly")}


def _secrets(name: str) -> SecretValue:
    raise AssertionError("no secret expected")


def _toolset(data_dir: Path, fake: FakeOrchestrator) -> Toolset:
    return build_ops_toolset(
        ORCHESTRATORS, JOBS, data_dir, _secrets, extra_adapters={"prefect": lambda s, r: fake}
    )


def _ctx(**extra: Any) -> ToolContext:
    return ToolContext(principal=Principal(agent="agent-a", token_id="t1"), call_id="c1", **extra)


async def _call(toolset: Toolset, tool: str, ctx: ToolContext | None = None, **args: Any) -> dict[str, Any]:
    spec = toolset.tools[f"ops.{tool}"]
    return await spec.run(ctx or _ctx(), spec.input_model.model_validate(args))


@pytest.mark.anyio
async def test_rerun_of_a_job_that_is_not_configured_is_refused(tmp_path: Path) -> None:
    fake = FakeOrchestrator()
    with pytest.raises(ToolFailure, match="job `other` is not configured"):
        await _call(_toolset(tmp_path, fake), "rerun_job", job="other", mode="full", reason="ticket 1")
    with pytest.raises(ToolFailure, match="not configured"):
        await _call(_toolset(tmp_path, fake), "get_job_status", job="other", run_id="r")
    assert fake.launches == []


@pytest.mark.anyio
async def test_the_same_reason_launches_once_and_a_repeat_returns_the_first_run(tmp_path: Path) -> None:
    fake = FakeOrchestrator()
    ops = _toolset(tmp_path, fake)
    first = await _call(ops, "rerun_job", job="nightly", mode="full", reason="INC-42: orders late")
    again = await _call(ops, "rerun_job", job="nightly", mode="full", reason="  inc-42:   ORDERS late ")
    assert (first["run_id"], first["already_launched"]) == ("run-1", False)
    assert (again["run_id"], again["already_launched"]) == ("run-1", True)
    assert len(fake.launches) == 1


@pytest.mark.anyio
async def test_another_reason_or_mode_launches_again(tmp_path: Path) -> None:
    fake = FakeOrchestrator()
    ops = _toolset(tmp_path, fake)
    await _call(ops, "rerun_job", job="nightly", mode="full", reason="INC-42")
    await _call(ops, "rerun_job", job="nightly", mode="full", reason="INC-43")
    await _call(ops, "rerun_job", job="nightly", mode="failed_only", reason="INC-42")
    assert [mode for _, mode, _ in fake.launches] == ["full", "full", "failed_only"]


@pytest.mark.anyio
async def test_a_repeat_after_a_restart_still_does_not_launch(tmp_path: Path) -> None:
    fake = FakeOrchestrator()
    ops = _toolset(tmp_path, fake)
    await _call(ops, "rerun_job", job="nightly", mode="full", reason="INC-42")
    assert ops.stop is not None
    await ops.stop()
    restarted = _toolset(tmp_path, fake)
    again = await _call(restarted, "rerun_job", job="nightly", mode="full", reason="INC-42")
    assert again["already_launched"] is True
    assert len(fake.launches) == 1
    assert fake.closed


@pytest.mark.anyio
async def test_concurrent_duplicates_launch_once(tmp_path: Path) -> None:
    fake = FakeOrchestrator()
    ops = _toolset(tmp_path, fake)
    results: list[dict[str, Any]] = []

    async def one() -> None:
        results.append(await _call(ops, "rerun_job", job="nightly", mode="full", reason="INC-9"))

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(one)
    assert len(fake.launches) == 1
    assert sorted(result["already_launched"] for result in results) == [False] + [True] * 4


@pytest.mark.anyio
async def test_rerun_records_the_run_id_and_key_for_the_audit_record(tmp_path: Path) -> None:
    ctx = _ctx()
    await _call(
        _toolset(tmp_path, FakeOrchestrator()), "rerun_job", ctx, job="nightly", mode="full", reason="r1x"
    )
    assert ctx.audit_detail["run_id"] == "run-1"
    assert ctx.audit_detail["idempotency_key"] == rerun_key("nightly", "full", "r1x")
    assert ctx.audit_detail["already_launched"] is False


@pytest.mark.anyio
async def test_orchestrator_errors_become_tool_failures_the_agent_reads(tmp_path: Path) -> None:
    fake = FakeOrchestrator()
    fake.fail_with = RunConflict(
        "the latest run of `flaky-orders/nightly` has not failed (found `COMPLETED`)"
    )
    ops = _toolset(tmp_path, fake)
    with pytest.raises(ToolFailure, match="has not failed"):
        await _call(ops, "rerun_job", job="nightly", mode="failed_only", reason="retry it")
    fake.fail_with = JobNotFound("prefect has no run `x` of `flaky-orders/nightly`")
    with pytest.raises(ToolFailure, match="has no run"):
        await _call(ops, "get_job_status", job="nightly", run_id="x")


@pytest.mark.anyio
async def test_a_failed_launch_is_not_remembered_so_the_same_reason_can_try_again(tmp_path: Path) -> None:
    fake = FakeOrchestrator()
    ops = _toolset(tmp_path, fake)
    fake.fail_with = RunConflict("busy")
    with pytest.raises(ToolFailure):
        await _call(ops, "rerun_job", job="nightly", mode="full", reason="INC-1")
    fake.fail_with = None
    result = await _call(ops, "rerun_job", job="nightly", mode="full", reason="INC-1")
    assert result["already_launched"] is False


@pytest.mark.anyio
async def test_failure_context_carries_failed_runs_log_tail_and_the_admins_runbook(tmp_path: Path) -> None:
    ctx = _ctx(policy_extra={"runbooks": {"nightly": "check the orders_raw landing bucket first"}})
    result = await _call(_toolset(tmp_path, FakeOrchestrator()), "get_failure_context", ctx, job="nightly")
    assert result["failed_runs"][0]["message"] == "orders_raw missing"
    assert result["log_tail"] == ["ERROR orders_raw missing"]
    assert result["runbook"] == "check the orders_raw landing bucket first"
    assert ctx.audit_detail["run_ids"] == ["run-0"]


def test_a_job_naming_an_unknown_orchestrator_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown orchestrator `nope`"):
        build_ops_toolset(
            ORCHESTRATORS, {"j": JobSettings(orchestrator="nope", id="a/b")}, tmp_path, _secrets
        )


def test_tool_arguments_are_validated_and_unknown_ones_refused(tmp_path: Path) -> None:
    model = _toolset(tmp_path, FakeOrchestrator()).tools["ops.rerun_job"].input_model
    with pytest.raises(ValidationError):
        model.model_validate({"job": "nightly", "mode": "everything", "reason": "why not"})
    with pytest.raises(ValidationError):
        model.model_validate({"job": "nightly", "mode": "full", "reason": "why", "force": True})


@pytest.mark.parametrize(
    "raw",
    [
        {"kind": "airflow", "url": "http://a", "username": "u", "password": "plain-password"},
        {"kind": "prefect", "url": "http://p/api", "api_key": "pnu_inline"},
        {"kind": "dbt_cloud", "url": "https://cloud.getdbt.com", "account_id": 1, "token": "inline"},
        {"kind": "prefect", "url": "ftp://p/api"},
        {"kind": "jenkins", "url": "http://j"},
    ],
)
def test_orchestrator_config_refuses_inline_credentials_bad_urls_and_unknown_kinds(
    raw: dict[str, Any],
) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(OrchestratorSettings).validate_python(raw)


@pytest.mark.parametrize(
    ("model", "raw"),
    [
        (
            AirflowSettings,
            {"kind": "airflow", "url": "http://a", "username": "u", "password": "plain-password"},
        ),
        (PrefectSettings, {"kind": "prefect", "url": "http://p/api", "api_key": "plain-password"}),
    ],
)
def test_a_refused_inline_credential_is_not_echoed_in_the_model_error(
    model: type[AirflowSettings | PrefectSettings], raw: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError, match="secret://NAME") as caught:
        model.model_validate(raw)
    assert "plain-password" not in str(caught.value)


def test_orchestrator_config_accepts_each_kind_with_secret_references() -> None:
    adapter: TypeAdapter[OrchestratorSettings] = TypeAdapter(OrchestratorSettings)
    kinds = [
        adapter.validate_python(raw).kind
        for raw in (
            {"kind": "prefect", "url": "http://p:4200/api/", "api_key": "secret://pf"},
            {"kind": "airflow", "url": "http://a:8080", "username": "u", "password": "secret://af"},
            {
                "kind": "dbt_cloud",
                "url": "https://cloud.getdbt.com",
                "account_id": 7,
                "token": "secret://dbt",
            },
            {"kind": "dagster", "url": "http://d:3000"},
        )
    ]
    assert kinds == ["prefect", "airflow", "dbt_cloud", "dagster"]


def test_the_store_keeps_the_first_run_of_a_key(tmp_path: Path) -> None:
    store = IdempotencyStore(tmp_path / STORE_FILE)
    store.record("k", "nightly", "full", "run-1")
    assert store.record("k", "nightly", "full", "run-2").run_id == "run-1"
    store.close()
    reopened = IdempotencyStore(tmp_path / STORE_FILE)
    record = reopened.get("k")
    assert record is not None and record.run_id == "run-1"
    assert reopened.get("other") is None
    reopened.close()


@pytest.mark.anyio
async def test_failure_context_shows_the_jobs_open_and_resolved_incidents(tmp_path: Path) -> None:
    from mcp_gateway.incidents.model import Fix
    from mcp_gateway.incidents.store import new_id, open_incident_store

    store = open_incident_store(path=tmp_path / "incidents.db")
    failing = [{"check": "row_count", "value": 0, "min": 1.0, "max": None, "passed": False}]
    old, _ = store.raise_or_add(
        new_id(), monitor="m", table="lake.s.t", job="nightly", failing=failing, opened_seq=3, now=1.0
    )
    store.recover(old.id, [Fix("c9", "healer", "data.switch_in", 12)], now=2.0)
    current, _ = store.raise_or_add(
        new_id(), monitor="m", table="lake.s.t", job="nightly", failing=failing, opened_seq=20, now=3.0
    )
    store.raise_or_add(
        new_id(), monitor="x", table="lake.s.u", job="other", failing=failing, opened_seq=21, now=4.0
    )
    toolset = build_ops_toolset(
        ORCHESTRATORS,
        JOBS,
        tmp_path,
        _secrets,
        extra_adapters={"prefect": lambda s, r: FakeOrchestrator()},
        incidents=store,
    )
    result = await _call(toolset, "get_failure_context", job="nightly")
    assert [i["id"] for i in result["open_incidents"]] == [current.id]
    (previous,) = result["previous_incidents"]
    assert previous["id"] == old.id and previous["uri"] == f"incident://{old.id}"
    assert previous["resolution"] == [
        {"call_id": "c9", "agent": "healer", "tool": "data.switch_in", "audit_seq": 12}
    ]
    store.close()
