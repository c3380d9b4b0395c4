"""The self-healing loop end to end, as an agent does it: the official MCP SDK client over HTTP against a
running gateway (uvicorn) with real dbt Core on the local PostgreSQL, a quality monitor, and a human
approving through the admin CLI.

A dbt build fails on a bad source row and the monitor has raised an incident; the agent reads the
failure context and the incident, finds the row by reading the table, fixes it on a branch, asks to
switch in (the dbt tests run on the branch first), a human approves, the switch-in runs the tests
again and switches, and the models downstream are re-run; the monitor's next run passes and recovers
the incident with the agent's switch-in as its resolution. Every step is on the audit log in order and
the chain verifies. The unhappy path: a fix that fails the dbt tests is refused before any human is
asked, with the failing test on the record, and production is unchanged.

One gateway and one seeded PostgreSQL demo for the module (dbt runs cost seconds each); each test
works on a branch of its own, so neither depends on the other's order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import RunningGateway, connect, gateways, wait_until
from dbt_support import PG_DSN, DemoDbt, demo_dbt
from mcp_gateway.demo.lake import FAT_FINGER_ID

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

EXE = Path(sys.executable).parent / "mcp-gateway"
AT_MOST = "source_at_most_sales_opportunities_amount__5000000"
NOT_NULL = "source_not_null_sales_opportunities_amount"
MAX_DEAL = 5_000_000
SELECT = "source:sales.opportunities+"


@dataclass
class Loop:
    demo: DemoDbt
    gw: RunningGateway
    admin_token: str

    @property
    def table(self) -> str:
        return f"pg.{self.demo.raw}.opportunities"

    def amounts(self) -> dict[int, float | None]:
        return dict(self.demo.rows("SELECT id, amount FROM {raw}.opportunities ORDER BY id"))  # type: ignore[arg-type]


def _policy(demo: DemoDbt) -> str:
    table = f"pg.{demo.raw}.opportunities"
    on_table = {"table": {"pattern": rf"pg\.{demo.raw}\..+", "required": True}}
    read = {"tables": [f"pg.{demo.raw}.*"], "production": True}
    healer = [
        {"id": "h-context", "tool": "ops.get_failure_context", "args": {"job": {"in": ["pipeline"]}}},
        {"id": "h-incidents", "tool": "resource:gateway:incident://*"},
        {"id": "h-sample", "tool": "data.sample_rows", "max_rows": 10, "read": read},
        {"id": "h-query", "tool": "data.query", "max_rows": 10, "read": read},
        {"id": "h-clone", "tool": "data.clone_table", "args": on_table},
        {"id": "h-fix", "tool": "data.update_rows", "args": on_table, "max_rows": 1},
        {"id": "h-switch", "tool": "data.switch_in", "args": on_table},
        {
            "id": "h-downstream",
            "tool": "ops.rerun_downstream",
            "args": {"project": {"in": ["dbt"]}, **on_table},
        },
    ]
    scheduler = [{"id": "s-build", "tool": "ops.rerun_job", "args": {"job": {"in": ["pipeline"]}}}]
    document = {
        "version": 1,
        "agents": {"healer": {"grants": healer}, "scheduler": {"grants": scheduler}},
        "tables": {
            table: {"switch_in_dbt": {"project": "dbt", "select": SELECT}, "switch_in_approval": True}
        },
    }
    return yaml.safe_dump(document, sort_keys=False)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    with demo_dbt(tmp_path_factory.mktemp("heal-dbt")) as demo:
        table = f"pg.{demo.raw}.opportunities"
        config = {
            "warehouses": {"pg": {"kind": "postgres", "dsn": PG_DSN, "schema": demo.raw}},
            # Freshness is shown by `demo heal` (tests/demo) and the dbt tests: one dbt run less here.
            "orchestrators": {"dbt": demo.settings(source_freshness=False).model_dump(exclude_none=True)},
            "jobs": {"pipeline": {"orchestrator": "dbt", "id": SELECT}},
            "monitors": {
                "deal_amounts": {
                    "table": table,
                    "checks": [{"metric": "max", "column": "amount", "max": MAX_DEAL}],
                    "every_seconds": 1,
                    "job": "pipeline",
                }
            },
        }
        with gateways(tmp_path_factory.mktemp("heal-gw")) as factory:
            gw = factory(
                _policy(demo), agents=("healer", "scheduler"), upstreams={}, config=config, watch_policy=False
            )
            assert gw.runtime.admins is not None
            yield Loop(demo, gw, gw.runtime.admins.create("approver")[1])


def _body(result: Any) -> dict[str, Any]:
    if isinstance(result.structured_content, dict):
        return dict(result.structured_content)
    parsed: dict[str, Any] = json.loads(result.content[0].text)
    return parsed


def _cli(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MCP_GATEWAY_ADMIN_TOKEN": token} if token else dict(os.environ)
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=60, env=env, check=False)


def _incident(gw: RunningGateway, status: str) -> Any:
    return next((r for r in gw.audit() if r.kind == "incident" and r.status == status), None)


def _facts(record: Any) -> dict[str, Any]:
    facts: dict[str, Any] = record.detail.get("facts", {})
    return facts


def _in_order(records: list[Any], steps: list[tuple[str, Any]]) -> list[int]:
    """The seq of the first record matching each step, each after the previous one's; fails naming the
    first step missing."""
    found: list[int] = []
    position = 0
    for name, matches in steps:
        for i in range(position, len(records)):
            if matches(records[i]):
                found.append(records[i].seq)
                position = i + 1
                break
        else:
            raise AssertionError(
                f"step `{name}` is not in the audit log after seq {found[-1] if found else 0}"
            )
    return found


def _call(agent: str, tool: str, status: str, *, gate_passed: bool = False, **facts: Any) -> Any:
    """Matches the outcome record of ``agent``'s call of ``tool`` ending ``status`` with these facts (and,
    with ``gate_passed``, dbt tests that passed on the branch)."""

    def matches(r: Any) -> bool:
        got = _facts(r)
        return (
            (r.kind, r.agent, r.tool, r.status) == ("outcome", agent, tool, status)
            and all(got.get(k) == v for k, v in facts.items())
            and (not gate_passed or got.get("dbt_tests", {}).get("passed") is True)
        )

    return matches


async def test_an_agent_heals_a_failed_dbt_build_on_a_branch_with_human_approval_all_on_the_record(
    loop: Loop,
) -> None:
    gw, table = loop.gw, loop.table
    # The monitor measures production as the gateway starts: the bad row raises an incident.
    wait_until(lambda: _incident(gw, "open") is not None, timeout=30, what="the monitor's incident")
    opened = _incident(gw, "open")
    incident_uri = f"incident://{opened.detail['incident']}"

    async with connect(gw.url, gw.tokens["scheduler"]) as scheduler:
        build = _body(
            await scheduler.call_tool(
                "ops.rerun_job", {"job": "pipeline", "mode": "full", "reason": "nightly"}
            )
        )
    assert build["state"] == "failed" and f"{AT_MOST} (fail, 1 failing rows)" in build["message"]

    async with connect(gw.url, gw.tokens["healer"]) as agent:
        assert incident_uri in [str(r.uri) for r in (await agent.list_resources()).resources]
        read = await agent.read_resource(incident_uri)
        incident = json.loads(read.contents[0].text)  # type: ignore[union-attr]
        assert (incident["status"], incident["failing"][0]["check"]) == ("open", "max(amount)")
        assert incident["failing"][0]["value"] == 10_000_000.0

        context = _body(await agent.call_tool("ops.get_failure_context", {"job": "pipeline"}))
        [node] = context["failed_nodes"]
        assert (node["name"], node["failing_rows"]) == (AT_MOST, 1)
        assert f'"{loop.demo.raw}"."opportunities" where amount > {MAX_DEAL}' in node["compiled_sql"]
        assert [i["id"] for i in context["open_incidents"]] == [incident["id"]]

        # The agent finds the row itself, from the bound the failing test states.
        too_big = [{"column": "amount", "op": ">", "value": MAX_DEAL}]
        sampled = await agent.call_tool(
            "data.sample_rows", {"table": table, "where": too_big, "columns": ["id", "name", "amount"]}
        )
        assert _body(sampled)["rows"] == [[FAT_FINGER_ID, "Initech platform", 10_000_000.0]]
        # The agent's own SELECT, checked by the gateway before it runs (the test's names, no input).
        sql = f"SELECT max(amount) AS largest FROM {loop.demo.raw}.opportunities WHERE id <> {FAT_FINGER_ID}"  # noqa: S608
        others = await agent.call_tool("data.query", {"sql": sql})
        assert _body(others)["rows"] == [[1_200_000.0]]  # 10,000,000 is a 10x typo of 1,000,000

        branch = {"table": table, "branch": "heal"}
        assert not (await agent.call_tool("data.clone_table", branch)).is_error
        fix = {"where": [{"column": "id", "op": "=", "value": FAT_FINGER_ID}], "set": {"amount": 1_000_000.0}}
        fixed = await agent.call_tool("data.update_rows", {**branch, **fix})
        assert not fixed.is_error, fixed.content[0].text

        asked = _body(await agent.call_tool("data.switch_in", branch))
        assert asked["status"] == "pending_approval"
        assert f"dbt tests `{SELECT}` passed on the branch" in asked["reasons"][0]
        assert loop.amounts()[FAT_FINGER_ID] == 10_000_000.0  # nothing switched before a human says so

        # A human approves with an admin token of their own, through the admin CLI.
        approved = _cli(
            "approvals", "approve", "-c", str(gw.config_path), asked["approval_id"], token=loop.admin_token
        )
        assert approved.returncode == 0, approved.stderr

        switched = await agent.call_tool("data.switch_in", {**branch, "approval_id": asked["approval_id"]})
        assert not switched.is_error, switched.content[0].text
        assert loop.amounts()[FAT_FINGER_ID] == 1_000_000.0

        reason = f"{incident['id']}: amount of {FAT_FINGER_ID} fixed on branch heal"
        rerun = _body(
            await agent.call_tool(
                "ops.rerun_downstream", {"project": "dbt", "table": table, "reason": reason}
            )
        )
        assert (rerun["state"], rerun["models"]) == (
            "success",
            ["fct_pipeline_by_stage", "stg_opportunities"],
        )

    won = loop.demo.rows("SELECT amount FROM {target}.fct_pipeline_by_stage WHERE stage = 'won'")
    assert won == [(1_250_000.0,)]  # the mart the business reads is right again
    wait_until(lambda: _incident(gw, "recovered") is not None, timeout=30, what="the incident's recovery")
    recovered = _incident(gw, "recovered")
    resolution = recovered.detail["resolution"]
    # The scheduler's failed build fixed nothing; the agent's switch-in did (the rerun is listed too when
    # it ended before the monitor's first passing run).
    assert resolution[0]["tool"] == "data.switch_in"
    assert {f["agent"] for f in resolution} == {"healer"}
    assert {f["tool"] for f in resolution} <= {"data.switch_in", "ops.rerun_downstream"}

    approval_id = asked["approval_id"]
    records = sorted(gw.audit(), key=lambda r: r.seq)
    switch_seq = _in_order(
        records,
        [
            ("the monitor opens an incident", lambda r: r.kind == "incident" and r.status == "open"),
            ("the dbt build fails", _call("scheduler", "ops.rerun_job", "ok", state="failed")),
            ("the agent reads the incident", _call("healer", f"resource:gateway:{incident_uri}", "ok")),
            ("the agent reads the failure context", _call("healer", "ops.get_failure_context", "ok")),
            ("the agent samples rows", _call("healer", "data.sample_rows", "ok", rows_returned=1)),
            ("the agent queries the table", _call("healer", "data.query", "ok", rows_returned=1)),
            ("the agent clones a branch", _call("healer", "data.clone_table", "ok")),
            ("the agent fixes the row", _call("healer", "data.update_rows", "ok", rows_updated=1)),
            (
                "dbt tests pass on the branch",
                _call("healer", "data.switch_in", "pending_approval", gate_passed=True),
            ),
            (
                "a human is asked",
                lambda r: r.kind == "approval_requested" and r.detail.get("approval_id") == approval_id,
            ),
            (
                "the human approves",
                lambda r: (
                    r.kind == "approval"
                    and r.detail.get("approver") == "approver"
                    and r.detail.get("via") == "cli"
                ),
            ),
            (
                "the switch-in runs the dbt tests again",
                _call("healer", "data.switch_in", "ok", gate_passed=True),
            ),
        ],
    )[-1]
    # After the switch-in, two things follow: the agent's rerun, and the monitor's next (passing) run.
    after = [r for r in records if r.seq > switch_seq]
    _in_order(after, [("the downstream models are re-run", _call("healer", "ops.rerun_downstream", "ok"))])
    _in_order(
        after, [("the incident is recovered", lambda r: r.kind == "incident" and r.status == "recovered")]
    )
    verified = _cli("audit", "verify", "-c", str(gw.config_path))
    assert verified.returncode == 0 and "chain intact" in verified.stdout, verified.stdout + verified.stderr


async def test_a_fix_that_fails_the_dbt_tests_is_refused_before_a_human_is_asked_and_production_is_unchanged(
    loop: Loop,
) -> None:
    gw, table = loop.gw, loop.table
    before = loop.amounts()
    branch = {"table": loop.table, "branch": "blank"}
    async with connect(gw.url, gw.tokens["healer"]) as agent:
        assert not (await agent.call_tool("data.clone_table", branch)).is_error
        # The agent blanks the amount instead of correcting it: no check on the maximum sees a NULL.
        where = [{"column": "id", "op": "=", "value": FAT_FINGER_ID}]
        blanked = await agent.call_tool(
            "data.update_rows", {**branch, "where": where, "set": {"amount": None}}
        )
        assert not blanked.is_error, blanked.content[0].text
        refused = await agent.call_tool("data.switch_in", branch)
    assert refused.is_error
    assert f"switch-in of `{table}` refused, failing dbt tests: {NOT_NULL} (fail, 1 failing rows)" in (
        refused.content[0].text
    )
    assert loop.amounts() == before

    outcome = [r for r in gw.audit() if r.kind == "outcome" and r.tool == "data.switch_in"][-1]
    tests = _facts(outcome)["dbt_tests"]
    assert (outcome.status, outcome.detail["facts"]["branch"], tests["passed"]) == ("error", "blank", False)
    assert [(t["name"], t["failing_rows"]) for t in tests["failed_tests"]] == [(NOT_NULL, 1)]
    asked = [r for r in gw.audit() if r.kind == "approval_requested" and r.call_id == outcome.call_id]
    assert asked == []
