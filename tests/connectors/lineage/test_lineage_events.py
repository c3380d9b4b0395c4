"""OpenLineage run events built from audit records: which runs, datasets and states."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from mcp_gateway.connectors.lineage.events import run_event, run_id, to_json
from mcp_gateway.types import AuditRecord

NS = "mcp-gateway"


def record(
    seq: int, kind: str, tool: str, *, status: str = "", decision: str = "allow", **more: Any
) -> AuditRecord:
    return AuditRecord(
        seq=seq,
        ts=1_780_000_000.0 + seq,
        kind=kind,
        call_id="call-1",
        agent="healer",
        tool=tool,
        decision=decision,
        status=status,
        args=more.get("args", {}),
        detail=more.get("detail", {}),
        prev_hash="0" * 64,
        hash="1" * 64,
    )


def body(rec: AuditRecord, intent: AuditRecord) -> dict[str, Any]:
    event = run_event(rec, intent, namespace=NS)
    assert event is not None
    return to_json(event)


def names(datasets: list[dict[str, Any]]) -> list[str]:
    return [d["name"] for d in datasets]


def test_clone_starts_a_run_reading_the_table_and_creating_the_branch() -> None:
    intent = record(1, "intent", "data.clone_table", args={"table": "lake.sales.orders", "branch": "fix"})
    start = body(intent, intent)
    done = body(record(2, "outcome", "data.clone_table", status="ok"), intent)
    assert start["eventType"] == "START" and done["eventType"] == "COMPLETE"
    assert start["run"]["runId"] == done["run"]["runId"] == run_id("call-1")
    assert start["job"] == done["job"] | {"facets": start["job"]["facets"]}
    assert start["job"]["name"] == "data.clone_table" and start["job"]["namespace"] == NS
    assert names(done["inputs"]) == ["lake.sales.orders"]
    assert names(done["outputs"]) == ["lake.sales.orders@fix"]
    assert done["outputs"][0]["namespace"] == "mcp-gateway://lake"
    assert done["outputs"][0]["facets"]["lifecycleStateChange"]["lifecycleStateChange"] == "CREATE"
    # A start says what will be touched, not that it changed.
    assert start["outputs"][0]["facets"] == {}


def test_switch_in_overwrites_production_with_the_new_version() -> None:
    intent = record(1, "intent", "data.switch_in", args={"table": "lake.sales.orders", "branch": "fix"})
    done = body(record(2, "outcome", "data.switch_in", status="ok", detail={"after_snapshot": 42}), intent)
    assert names(done["inputs"]) == ["lake.sales.orders@fix"]
    out = done["outputs"][0]
    assert out["name"] == "lake.sales.orders"
    assert out["facets"]["lifecycleStateChange"]["lifecycleStateChange"] == "OVERWRITE"
    assert out["facets"]["version"]["datasetVersion"] == "42"


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("ok", "COMPLETE"),
        ("cancelled", "ABORT"),
        ("pending_approval", "OTHER"),
        ("error", "FAIL"),
        ("upstream_error", "FAIL"),
        ("internal_error", "FAIL"),
    ],
)
def test_an_outcome_ends_the_run_by_its_status(status: str, state: str) -> None:
    intent = record(1, "intent", "data.update_rows", args={"table": "pg.public.t", "branch": "b"})
    done = body(record(2, "outcome", "data.update_rows", status=status), intent)
    assert done["eventType"] == state
    changed = "lifecycleStateChange" in done["outputs"][0]["facets"]
    assert changed is (status == "ok")
    if state == "FAIL":
        # The status only: a reason could quote upstream text.
        assert (
            done["run"]["facets"]["errorMessage"]["message"] == f"data.update_rows ended with status {status}"
        )


def test_tags_tie_the_run_to_the_agent_and_the_audit_record() -> None:
    intent = record(7, "intent", "ops.rerun_job", args={"job": "nightly_sales"})
    done = body(record(9, "outcome", "ops.rerun_job", status="ok"), intent)
    tags = {t["key"]: t["value"] for t in done["run"]["facets"]["tags"]["tags"]}
    assert tags == {
        "agent": "healer",
        "call_id": "call-1",
        "audit_seq": "9",
        "status": "ok",
        "job": "nightly_sales",
    }
    assert done["inputs"] == [] and done["outputs"] == []


@pytest.mark.parametrize(
    "intent",
    [
        record(1, "intent", "data.switch_in", decision="deny", args={"table": "lake.a.b", "branch": "x"}),
        record(1, "intent", "github.create_issue", args={"title": "x"}),
        record(1, "denied", "data.switch_in", decision="deny"),
    ],
)
def test_no_event_for_what_did_not_touch_data(intent: AuditRecord) -> None:
    assert run_event(intent, intent, namespace=NS) is None


def test_an_outcome_of_another_call_is_not_this_runs_end() -> None:
    intent = record(1, "intent", "data.clone_table", args={"table": "lake.a.b", "branch": "x"})
    other = dataclasses.replace(record(2, "outcome", "data.clone_table", status="ok"), call_id="call-2")
    assert run_event(other, intent, namespace=NS) is None
