"""Rerun idempotency keys expire: the window, what the answer says, the store's schema migration, and
the real path through the gateway to the Dagster emulator over HTTP (an injected clock, no sleeps)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_orch_dagster import FLAKY, OPS_POLICY, TOKEN, _settings
from test_orch_ops_toolset import JOBS, ORCHESTRATORS, FakeOrchestrator, _call, _secrets

from conftest import GatewayFactory, RunningGateway, connect, free_port
from mcp_gateway.connectors.orchestrators.base import OrchestratorUnavailable, RerunMode, RunInfo
from mcp_gateway.connectors.orchestrators.config import JobSettings
from mcp_gateway.connectors.orchestrators.dagster import IDEMPOTENCY_TAG
from mcp_gateway.connectors.orchestrators.idempotency import (
    SCHEMA_VERSION,
    IdempotencyStore,
    iso,
    launch_key,
    rerun_key,
)
from mcp_gateway.demo.emulators import RunningServer, serve_in_thread
from mcp_gateway.demo.emulators.dagster import DagsterEmulator
from mcp_gateway.demo.emulators.dagster_runs import DagsterJob
from mcp_gateway.errors import ConfigError
from mcp_gateway.tools.base import ToolFailure, Toolset
from mcp_gateway.tools.ops import STORE_FILE, build_ops_toolset

T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z
HOUR = 3600.0
DAY = 24 * HOUR


class Clock:
    """A settable wall clock (epoch seconds)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _ops(data_dir: Path, fake: FakeOrchestrator, clock: Clock, jobs: Any = None) -> Toolset:
    return build_ops_toolset(
        ORCHESTRATORS,
        jobs or JOBS,
        data_dir,
        _secrets,
        extra_adapters={"prefect": lambda s, r: fake},
        clock=clock,
    )


@pytest.mark.anyio
async def test_the_same_reason_launches_again_once_the_24_hour_window_has_passed(tmp_path: Path) -> None:
    fake, clock = FakeOrchestrator(), Clock()
    ops = _ops(tmp_path, fake, clock)
    args = {"job": "nightly", "mode": "full", "reason": "nightly schedule"}
    first = await _call(ops, "rerun_job", **args)
    assert first["already_launched"] is False and "deduplicated_to" not in first
    assert first["idempotency_key_expires_at"] == iso(T0 + DAY)

    clock.now = T0 + DAY - 1
    again = await _call(ops, "rerun_job", **args)
    assert (again["run_id"], again["already_launched"]) == ("run-1", True)
    assert again["deduplicated_to"] == {"run_id": "run-1", "launched_at": iso(T0), "started_at": None}
    assert again["idempotency_key_expires_at"] == iso(T0 + DAY)

    clock.now = T0 + DAY
    fresh = await _call(ops, "rerun_job", **args)
    assert (fresh["run_id"], fresh["already_launched"]) == ("run-2", False)
    assert fresh["previous_key_expired"] == {
        "run_id": "run-1",
        "launched_at": iso(T0),
        "expired_at": iso(T0 + DAY),
    }
    assert fresh["idempotency_key_expires_at"] == iso(T0 + 2 * DAY)
    # The orchestrator gets a new launch key, or Prefect/Airflow/Dagster would answer with run-1.
    key = rerun_key("nightly", "full", "nightly schedule")
    assert [launched for _, _, launched in fake.launches] == [key, launch_key(key, 1)]
    assert (await _call(ops, "rerun_job", **args))["deduplicated_to"]["run_id"] == "run-2"
    assert len(fake.launches) == 2


@pytest.mark.anyio
async def test_the_window_is_configurable_per_job(tmp_path: Path) -> None:
    fake, clock = FakeOrchestrator(), Clock()
    jobs = {"nightly": JobSettings(orchestrator="pf", id="a/b", idempotency_window_seconds=3600)}
    ops = _ops(tmp_path, fake, clock, jobs)
    first = await _call(ops, "rerun_job", job="nightly", mode="full", reason="INC-1")
    assert first["idempotency_key_expires_at"] == iso(T0 + HOUR)
    clock.now = T0 + HOUR
    assert (await _call(ops, "rerun_job", job="nightly", mode="full", reason="INC-1"))["run_id"] == "run-2"


@pytest.mark.anyio
async def test_the_audit_record_names_the_run_a_repeat_was_deduplicated_to(tmp_path: Path) -> None:
    from test_orch_ops_toolset import _ctx

    fake, clock = FakeOrchestrator(), Clock()
    ops = _ops(tmp_path, fake, clock)
    await _call(ops, "rerun_job", job="nightly", mode="full", reason="INC-2")
    clock.now = T0 + HOUR
    ctx = _ctx()
    await _call(ops, "rerun_job", ctx, job="nightly", mode="full", reason="INC-2")
    assert ctx.audit_detail["deduplicated_to"]["run_id"] == "run-1"
    assert ctx.audit_detail["idempotency_key_expires_at"] == iso(T0 + DAY)
    assert ctx.audit_detail["already_launched"] is True


class LostAnswer(FakeOrchestrator):
    """Launches, then loses the answer once (as a crash between launch and record would)."""

    def __init__(self) -> None:
        super().__init__()
        self.lose_next = False

    async def rerun(self, job_id: str, mode: RerunMode, idempotency_key: str) -> RunInfo:
        info = await super().rerun(job_id, mode, idempotency_key)
        if self.lose_next:
            self.lose_next = False
            raise OrchestratorUnavailable("connection reset after the launch")
        return info


@pytest.mark.anyio
async def test_a_retry_after_a_lost_launch_answer_hands_the_orchestrator_the_same_launch_key(
    tmp_path: Path,
) -> None:
    fake, clock = LostAnswer(), Clock()
    ops = _ops(tmp_path, fake, clock)
    await _call(ops, "rerun_job", job="nightly", mode="full", reason="INC-3")
    clock.now = T0 + 2 * DAY
    fake.lose_next = True
    with pytest.raises(ToolFailure, match="connection reset"):
        await _call(ops, "rerun_job", job="nightly", mode="full", reason="INC-3")
    await _call(ops, "rerun_job", job="nightly", mode="full", reason="INC-3")
    keys = [launched for _, _, launched in fake.launches]
    assert keys[1] == keys[2] != keys[0]  # the orchestrator deduplicates the retry within its generation


# ---- the store's schema migration ------------------------------------------------------------------


def _legacy_store(path: Path, rows: list[tuple[str, Any]]) -> None:
    """A store as the previous release wrote it (schema 0: no generation, user_version 0)."""
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE rerun_keys (key TEXT PRIMARY KEY, job TEXT NOT NULL, mode TEXT NOT NULL,"
        " run_id TEXT NOT NULL, created_at REAL NOT NULL)"
    )
    for key, created_at in rows:
        conn.execute(
            "INSERT INTO rerun_keys VALUES (?, 'nightly', 'full', ?, ?)", (key, f"old-{key}", created_at)
        )
    conn.commit()
    conn.close()


def test_a_legacy_store_is_migrated_and_its_rows_aged_from_their_recorded_launch(tmp_path: Path) -> None:
    path = tmp_path / STORE_FILE
    _legacy_store(
        path,
        [
            ("fresh", T0 - HOUR),
            ("stale", T0 - 30 * DAY),
            ("garbage", "yesterday"),
            ("future", T0 + 365 * DAY),
        ],
    )
    store = IdempotencyStore(path, Clock())
    records = {key: store.get(key) for key in ("fresh", "stale", "garbage", "future")}
    assert all(r is not None and r.generation == 0 for r in records.values())
    live = {key: r.live(T0, DAY) for key, r in records.items() if r is not None}
    assert live == {"fresh": True, "stale": False, "garbage": False, "future": False}
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    IdempotencyStore(path, Clock()).close()  # opening a migrated store again changes nothing


@pytest.mark.anyio
async def test_a_stale_legacy_key_launches_anew_with_a_launch_key_the_orchestrator_never_saw(
    tmp_path: Path,
) -> None:
    key = rerun_key("nightly", "full", "nightly schedule")
    _legacy_store(tmp_path / STORE_FILE, [(key, T0 - 30 * DAY)])
    fake = FakeOrchestrator()
    result = await _call(
        _ops(tmp_path, fake, Clock()), "rerun_job", job="nightly", mode="full", reason="nightly schedule"
    )
    assert result["already_launched"] is False
    assert result["previous_key_expired"]["run_id"] == f"old-{key}"
    assert fake.launches[0][2] == launch_key(key, 1) != key


def test_a_store_from_a_newer_gateway_is_refused(tmp_path: Path) -> None:
    path = tmp_path / STORE_FILE
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="newer than this gateway"):
        IdempotencyStore(path)


def test_the_window_must_be_sane() -> None:
    with pytest.raises(ValueError, match="idempotency_window_seconds"):
        JobSettings(orchestrator="pf", id="a/b", idempotency_window_seconds=0)


# ---- through the gateway to the Dagster emulator over real HTTP ----------------------------------------


@pytest.fixture
def dagster() -> Iterator[tuple[DagsterEmulator, RunningServer]]:
    emu = DagsterEmulator([DagsterJob("etl", "analytics", "flaky", fail_first_run=True)], token=TOKEN)
    server = serve_in_thread(emu.app, free_port())
    yield emu, server
    server.stop()


@pytest.mark.anyio
@pytest.mark.e2e
async def test_nightly_schedule_no_longer_returns_yesterdays_failed_run_forever(
    dagster: tuple[DagsterEmulator, RunningServer], make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    emu, server = dagster
    clock = Clock()
    gateway: list[RunningGateway] = []
    toolset = build_ops_toolset(
        {"dagster": _settings(server.url)},
        {"orders": JobSettings(orchestrator="dagster", id=FLAKY)},
        tmp_path,
        lambda name: gateway[0].runtime.gateway.secrets.resolve(name),
        clock=clock,
    )
    gateway.append(
        make_gateway(OPS_POLICY, secrets={"dagster-token": TOKEN}, upstreams={}, toolsets=[toolset])
    )
    gw = gateway[0]
    args = {"job": "orders", "mode": "full", "reason": "nightly schedule"}

    async def rerun(client: Any) -> dict[str, Any]:
        result = await client.call_tool("ops.rerun_job", args)
        assert not result.is_error, result.content[0].text
        parsed: dict[str, Any] = json.loads(result.content[0].text)
        return parsed

    async def final_state(client: Any, run_id: str) -> str:
        with anyio.fail_after(10):
            while True:
                result = await client.call_tool("ops.get_job_status", {"job": "orders", "run_id": run_id})
                state = str(json.loads(result.content[0].text)["state"])
                if state in ("success", "failed"):
                    return state

    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        first = await rerun(client)
        assert await final_state(client, first["run_id"]) == "failed"
        clock.now = T0 + 6 * HOUR
        same = await rerun(client)
        assert same["deduplicated_to"]["run_id"] == first["run_id"] and same["state"] == "failed"
        assert same["idempotency_key_expires_at"] == iso(T0 + DAY)
        clock.now = T0 + DAY + 1
        next_night = await rerun(client)
        assert next_night["run_id"] != first["run_id"] and next_night["already_launched"] is False
        assert await final_state(client, next_night["run_id"]) == "success"

    assert emu.operations.count("launchRun") == 2
    tags = {emu.runs[r["run_id"]].tags[IDEMPOTENCY_TAG] for r in (first, next_night)}
    assert len(tags) == 2
    outcomes = [r for r in gw.audit() if r.kind == "outcome" and r.tool == "ops.rerun_job"]
    facts = [o.detail["facts"] for o in outcomes]
    assert [f["already_launched"] for f in facts] == [False, True, False]
    assert facts[1]["deduplicated_to"]["run_id"] == first["run_id"]
    assert facts[2]["previous_key_expired"]["run_id"] == first["run_id"]
