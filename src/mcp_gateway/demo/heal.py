"""``mcp-gateway demo heal``: the self-healing loop against a quickstart started with ``--postgres``.

The demo agent (its token only, MCP over HTTP) meets a dbt build failing on a bad row, the quality
monitor's incident, the failure context; it finds the row by reading the table, fixes it on a branch,
asks to switch in (the dbt tests run on the branch first), and once a human approved, switches in and
re-runs the models downstream; the monitor then passes and the incident is recovered. One line a step.

The human is played here too, and says so: the approval goes through the admin API with an admin
token (``$MCP_GATEWAY_ADMIN_TOKEN``), never with the agent's token.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.shared.exceptions import MCPError

from mcp_gateway.config import Settings
from mcp_gateway.connectors.orchestrators.config import DbtCoreSettings
from mcp_gateway.connectors.warehouse.config import PostgresSettings
from mcp_gateway.demo.agent import Print
from mcp_gateway.demo.quickstart_pg import JOB, MONITOR, PROJECT, WAREHOUSE, PrerequisiteMissing

Approve = Callable[[str], Awaitable[dict[str, Any]]]
"""Approves one approval id as a human; returns the approval as the admin API shows it."""
WAIT_SECONDS = 60.0
"""How long the demo waits for the monitor (it measures every few seconds)."""


@dataclass(frozen=True)
class Loop:
    """What the quickstart configured for the loop (``quickstart_pg``)."""

    table: str
    job: str
    project: str
    monitor: str


def loop_of(settings: Settings, directory: object) -> Loop:
    """The loop a quickstart in ``directory`` configured.

    Raises:
        PrerequisiteMissing: it was started without ``--postgres`` (no PostgreSQL, no dbt Core).
    """
    warehouse = settings.warehouses.get(WAREHOUSE)
    monitor = settings.monitors.get(MONITOR)
    if not (
        isinstance(warehouse, PostgresSettings)
        and isinstance(settings.orchestrators.get(PROJECT), DbtCoreSettings)
        and monitor is not None
        and JOB in settings.jobs
    ):
        raise PrerequisiteMissing(
            f"the quickstart in `{directory}` runs without PostgreSQL, which dbt Core needs: restart it as"
            " `mcp-gateway quickstart --postgres 'host=127.0.0.1 port=5432 user=postgres dbname=test'`"
        )
    return Loop(table=monitor.table, job=JOB, project=PROJECT, monitor=MONITOR)


class StepFailed(Exception):
    """A step did not go as the story needs; its line was printed."""


class Steps:
    """Numbered one-line steps over one MCP client session."""

    def __init__(self, client: Client, say: Print, total: int) -> None:
        self.client = client
        self.say = say
        self.total = total
        self.n = 0

    def line(self, what: str, text: str, ok: bool = True) -> None:
        self.n += 1
        self.say(f"[{self.n:>2}/{self.total}] {'✓' if ok else '✗'} {what:<11} {text}")

    async def call(self, what: str, tool: str, args: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """Call ``tool``: (not an error, the answer as a dict). A refusal prints its step as failed."""
        try:
            result = await self.client.call_tool(tool, args)
        except MCPError as exc:
            self.line(what, f"{tool} refused: {exc}", ok=False)
            raise StepFailed(str(exc)) from None
        body: Any = result.structured_content
        if body is None:
            text = " ".join(getattr(block, "text", "") for block in result.content)
            try:
                body = json.loads(text)
            except ValueError:
                body = {"message": text}
        return not result.is_error, body if isinstance(body, dict) else {"result": body}

    def fail(self, what: str, text: str) -> StepFailed:
        self.line(what, text, ok=False)
        return StepFailed(text)


async def read_incident(client: Client, uri: str) -> dict[str, Any]:
    """The incident resource ``uri`` (``incident://<id>``) as a dict."""
    contents = (await client.read_resource(uri)).contents
    body = json.loads(getattr(contents[0], "text", "") or "{}")
    return dict(body) if isinstance(body, dict) else {}


async def open_incident(client: Client, monitor: str) -> dict[str, Any] | None:
    """The open incident of ``monitor`` (a monitor has at most one), from the ``incident://`` resources."""
    for resource in (await client.list_resources()).resources:
        uri = str(resource.uri)
        if uri.startswith("incident://"):
            body = await read_incident(client, uri)
            if body.get("monitor") == monitor and body.get("status") == "open":
                return body
    return None


async def wait_for(probe: Callable[[], Awaitable[dict[str, Any] | None]]) -> dict[str, Any] | None:
    """``probe()`` once a second until it answers (bounded by ``WAIT_SECONDS``); None after that."""
    with anyio.move_on_after(WAIT_SECONDS):
        while (found := await probe()) is None:
            await anyio.sleep(1)
        return found
    return None


def _amount(value: Any) -> str:
    return f"{float(value):,.0f}"


async def heal(client: Client, say: Print, loop: Loop, approve: Approve) -> bool:
    """Play the loop; returns whether the incident ended recovered. Each step prints one line."""
    steps = Steps(client, say, total=12)
    try:
        return await _play(steps, loop, approve)
    except StepFailed:
        return False


async def _play(steps: Steps, loop: Loop, approve: Approve) -> bool:
    tag = secrets.token_hex(3)
    ok, run = await steps.call(
        "build", "ops.rerun_job", {"job": loop.job, "mode": "full", "reason": f"nightly build {tag}"}
    )
    if not ok or run.get("state") != "failed":
        said = run.get("message") or run.get("state")
        steps.line(
            "build", f"`{loop.job}` did not fail ({said}): nothing to heal (restart the quickstart)", ok=False
        )
        return False
    steps.line("build", f"ops.rerun_job {loop.job} → failed: {run.get('message')}")

    incident = await wait_for(lambda: open_incident(steps.client, loop.monitor))
    if incident is None:
        raise steps.fail("monitor", f"no open incident of monitor `{loop.monitor}` after {WAIT_SECONDS:.0f}s")
    check = incident["failing"][0]
    steps.line(
        "monitor",
        f"{incident['uri']} open: {check['check']} = {_amount(check['value'])} (at most"
        f" {_amount(check['max'])}) on {incident['table']}",
    )

    ok, context = await steps.call("context", "ops.get_failure_context", {"job": loop.job})
    if not ok or not context.get("failed_nodes"):
        raise steps.fail("context", f"no failed dbt node in the failure context: {context}")
    node = context["failed_nodes"][0]
    fresh = ", ".join(
        f"{'.'.join(str(s['source']).split('.')[-2:])} {s['status']}"
        for s in context.get("source_freshness") or []
    )
    previous = context.get("previous_incidents") or []
    # Failure memory: how the same failure was fixed before, if it happened before.
    fixers = [f"{f['agent']} {f['tool']}" for f in (previous[0].get("resolution") or [])] if previous else []
    before = f" (last fixed by {', '.join(fixers)})" if fixers else ""
    steps.line(
        "context",
        f"ops.get_failure_context → test {node['name']} ({node.get('failing_rows')} failing rows);"
        f" freshness: {fresh or 'not checked'}; incidents: {len(context.get('open_incidents') or [])} open,"
        f" {len(previous)} earlier{before}",
    )

    column = re.search(r"\((\w+)\)", str(check["check"]))
    if column is None:
        raise steps.fail("find", f"cannot read a column from check `{check['check']}`")
    bound, name = check["max"], column.group(1)
    where = [{"column": name, "op": ">", "value": bound}]
    ok, found = await steps.call(
        "find", "data.sample_rows", {"table": loop.table, "where": where, "columns": ["id", "name", name]}
    )
    if not ok or not found.get("rows"):
        raise steps.fail("find", f"data.sample_rows found no row over {_amount(bound)}: {found}")
    bad_id, deal, bad = found["rows"][0]
    steps.line("find", f"data.sample_rows {name} > {_amount(bound)} → id {bad_id} {deal!r} {_amount(bad)}")

    namespace = loop.table.split(".", 1)[1]
    sql = f"SELECT max({name}) AS largest FROM {namespace} WHERE id <> {int(bad_id)}"  # noqa: S608 - ours
    ok, others = await steps.call(
        "compare", "data.query", {"sql": sql, "warehouse": loop.table.split(".")[0]}
    )
    if not ok or not others.get("rows"):
        raise steps.fail("compare", f"data.query refused: {others}")
    fixed = float(bad) / 10
    steps.line(
        "compare",
        f"data.query → the largest other deal is {_amount(others['rows'][0][0])}: {_amount(bad)} is a 10x"
        f" typo of {_amount(fixed)}",
    )

    branch = f"agent_heal_{tag}"
    ok, cloned = await steps.call("branch", "data.clone_table", {"table": loop.table, "branch": branch})
    if not ok:
        raise steps.fail("branch", f"data.clone_table: {cloned}")
    steps.line("branch", f"data.clone_table → {loop.table}@{branch} (production untouched)")

    fix = {"table": loop.table, "branch": branch, "where": [{"column": "id", "op": "=", "value": bad_id}]}
    ok, updated = await steps.call("fix", "data.update_rows", {**fix, "set": {name: fixed}})
    if not ok:
        raise steps.fail("fix", f"data.update_rows: {updated}")
    steps.line(
        "fix", f"data.update_rows id = {bad_id}: {name} {_amount(bad)} → {_amount(fixed)} on the branch"
    )

    switch = {"table": loop.table, "branch": branch}
    ok, asked = await steps.call("dbt tests", "data.switch_in", switch)
    approval_id = asked.get("approval_id")
    if asked.get("status") != "pending_approval" or not approval_id:
        raise steps.fail(
            "dbt tests", f"data.switch_in did not wait for a human: {asked.get('message', asked)}"
        )
    steps.line("dbt tests", f"data.switch_in → {'; '.join(asked.get('reasons') or [])}: {approval_id}")

    decided = await approve(approval_id)
    if decided.get("status") != "approved":
        raise steps.fail("approve", f"the approval of {approval_id} is {decided.get('status')}: {decided}")
    steps.line(
        "approve",
        f"a human (played by this demo: admin `{decided.get('decided_by')}`, token from"
        f" $MCP_GATEWAY_ADMIN_TOKEN) approved {approval_id} through the admin API",
    )

    ok, switched = await steps.call("switch in", "data.switch_in", {**switch, "approval_id": approval_id})
    if not ok:
        raise steps.fail("switch in", f"data.switch_in: {switched.get('message', switched)}")
    steps.line(
        "switch in",
        "data.switch_in (approved) → dbt tests passed again on the branch, now switched into production",
    )

    reason = f"{incident['id']}: {name} of id {bad_id} fixed on {branch}"
    ok, rebuilt = await steps.call(
        "downstream", "ops.rerun_downstream", {"project": loop.project, "table": loop.table, "reason": reason}
    )
    if not ok or rebuilt.get("state") != "success":
        raise steps.fail("downstream", f"ops.rerun_downstream: {rebuilt.get('message', rebuilt)}")
    steps.line(
        "downstream", f"ops.rerun_downstream → {', '.join(rebuilt['models'])} rebuilt and tested: success"
    )

    async def recovered_incident() -> dict[str, Any] | None:
        body = await read_incident(steps.client, incident["uri"])
        return body if body.get("status") == "recovered" else None

    recovered = await wait_for(recovered_incident)
    if recovered is None:
        raise steps.fail("quality", f"incident {incident['id']} not recovered after {WAIT_SECONDS:.0f}s")
    fixes = ", ".join(f"{f['agent']} {f['tool']}" for f in recovered["resolution"]) or "no governed call"
    steps.line("quality", f"monitor passes: {recovered['uri']} recovered; resolution: {fixes}")
    return True


def admin_approver(base_url: str, admin_token: str, note: str) -> Approve:
    """Approves through the gateway's admin API (``POST /admin/approvals/{id}/approve``) as the holder
    of ``admin_token``; an answer other than 200 is returned as ``{"status": "error", ...}``."""

    async def approve(approval_id: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {admin_token}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            answer = await http.post(f"{base_url}/admin/approvals/{approval_id}/approve", json={"note": note})
        body: Any = (
            answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
        )
        if answer.status_code != 200:
            return {
                "status": "error",
                "http_status": answer.status_code,
                **(body if isinstance(body, dict) else {}),
            }
        return dict(body)

    return approve
