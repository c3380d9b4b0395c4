"""``mcp-gateway demo ...``: play the quickstart's agent through the stories, one governed MCP call at a
time, printing each call and what the gateway answered.

This is a client like any agent: it holds only the demo agent's token, speaks MCP over HTTP with the
official SDK client, and can do exactly what ``policies/demo.yaml`` grants.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from mcp_gateway.demo.emulators.salesforce_data import INITECH_OPPORTUNITY_ID

Print = Callable[[str], None]
OPPORTUNITIES = "lake.sales.opportunities"
JOB = "nightly_revenue"
MAX_DEAL = 5_000_000  # the opportunities table's switch-in check: no deal is larger
_SHOWN = 600


@asynccontextmanager
async def session(url: str, token: str) -> AsyncIterator[Client]:
    """An MCP client session to the gateway with the agent's bearer token."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        async with Client(streamable_http_client(url, http_client=http), mode="auto") as client:
            yield client


class Agent:
    """Calls tools and prints each exchange; ``call`` returns the structured result (or the text)."""

    def __init__(self, client: Client, say: Print) -> None:
        self.client = client
        self.say = say

    async def call(self, tool: str, args: dict[str, Any]) -> tuple[bool, Any]:
        """Returns ``(ok, body)``; a refusal the gateway answers as a protocol error is ``(False, text)``."""
        self.say(f"\n→ {tool} {json.dumps(args, ensure_ascii=False)}")
        try:
            result = await self.client.call_tool(tool, args)
        except MCPError as exc:
            self.say(f"  ✗ refused: {exc}")
            return False, str(exc)
        body: Any = result.structured_content
        if body is None:
            body = " ".join(getattr(block, "text", "") for block in result.content)
        shown = json.dumps(body, ensure_ascii=False) if isinstance(body, dict) else str(body)
        if len(shown) > _SHOWN:
            shown = shown[: _SHOWN - 1] + "…"
        self.say(f"  {'✗' if result.is_error else '✓'} {shown}")
        return not result.is_error, body


async def fix_amount(agent: Agent) -> dict[str, Any]:
    """Story 2: an amount fat-fingered as 10,000,000 is found by reading the table, fixed on a branch,
    verified, switched in, undone."""
    branch = f"agent_fix_{secrets.token_hex(3)}"
    await agent.call("data.query_quality_metrics", {"table": OPPORTUNITIES})
    agent.say(f"\n# Which deal is over {MAX_DEAL:,}? Read the rows instead of guessing:")
    too_big = [{"column": "amount", "op": ">", "value": MAX_DEAL}]
    ok, found = await agent.call(
        "data.sample_rows", {"table": OPPORTUNITIES, "where": too_big, "columns": ["id", "name", "amount"]}
    )
    if not ok or not isinstance(found, dict) or not found.get("rows"):
        return {"switched": False}
    bad_id = found["rows"][0][0]
    agent.say("\n# Production is never edited in place: a write aimed at `main` is refused.")
    where = [{"column": "id", "op": "=", "value": bad_id}]
    await agent.call(
        "data.update_rows", {"table": OPPORTUNITIES, "branch": "main", "where": where, "set": {"amount": 1}}
    )
    await agent.call("data.clone_table", {"table": OPPORTUNITIES, "branch": branch})
    await agent.call(
        "data.update_rows",
        {"table": OPPORTUNITIES, "branch": branch, "where": where, "set": {"amount": 1_000_000}},
    )
    await agent.call("data.sample_rows", {"table": OPPORTUNITIES, "branch": branch, "where": too_big})
    await agent.call("data.query_quality_metrics", {"table": OPPORTUNITIES, "branch": branch})
    ok, switched = await agent.call("data.switch_in", {"table": OPPORTUNITIES, "branch": branch})
    if not ok or not isinstance(switched, dict):
        return {"switched": False}
    await agent.call("data.query_quality_metrics", {"table": OPPORTUNITIES})
    agent.say("\n# Every switch-in records the snapshot it replaced, so it can be undone:")
    await agent.call(
        "data.rollback_table", {"table": OPPORTUNITIES, "to_snapshot": switched["before_snapshot"]}
    )
    return {"switched": True, "branch": branch, **switched}


async def checks(agent: Agent) -> None:
    """Stories 1 and 3: an empty forecast table, and revenue that mixes currencies."""
    await agent.call("data.query_quality_metrics", {"table": "lake.sales.us_forecast_dec_v1"})
    await agent.call(
        "data.query_quality_metrics", {"table": "lake.sales.revenue", "metrics": ["distinct_currencies"]}
    )


async def _wait_for(agent: Agent, run_id: str, final: set[str]) -> str:
    state = ""
    with anyio.move_on_after(60):
        while state not in final:
            ok, body = await agent.call("ops.get_job_status", {"job": JOB, "run_id": run_id})
            state = body.get("state", "") if ok and isinstance(body, dict) else "unknown"
            if state == "unknown":
                break
    return state


async def rerun(agent: Agent) -> str:
    """A nightly dbt Cloud job fails; the agent reads why, reruns only what failed, and watches it."""
    ok, first = await agent.call("ops.rerun_job", {"job": JOB, "mode": "full", "reason": "nightly schedule"})
    if ok and isinstance(first, dict) and not first.get("already_launched"):
        await _wait_for(agent, str(first["run_id"]), {"success", "failed", "cancelled"})
    await agent.call("ops.get_failure_context", {"job": JOB})
    reason = "INC-4711: raw.orders landed late; rerun the failed step"
    ok, body = await agent.call("ops.rerun_job", {"job": JOB, "mode": "failed_only", "reason": reason})
    if not ok or not isinstance(body, dict):
        return "refused"
    state = await _wait_for(agent, str(body["run_id"]), {"success", "failed", "cancelled"})
    agent.say("\n# The same reason never launches twice:")
    await agent.call("ops.rerun_job", {"job": JOB, "mode": "failed_only", "reason": reason})
    return state


PATCH = {
    "org": "sandbox",
    "object": "Opportunity",
    "id": INITECH_OPPORTUNITY_ID,
    "fields": {"Amount": 1_000_000},
}


async def patch(agent: Agent, approval_id: str | None = None) -> dict[str, Any]:
    """A $1m deal fat-fingered as $10m is corrected at the source: the 10x change waits for a human,
    runs once with the approval, and the pipeline that read the wrong amount is re-run after."""
    if approval_id is None:
        await agent.call(
            "salesforce.get_record",
            {
                "org": "sandbox",
                "object": "Opportunity",
                "id": INITECH_OPPORTUNITY_ID,
                "fields": ["Name", "Amount", "Description"],
            },
        )
        _, body = await agent.call("salesforce.patch_record", PATCH)
        return body if isinstance(body, dict) else {"text": body}
    ok, body = await agent.call("salesforce.patch_record", {**PATCH, "approval_id": approval_id})
    result = body if isinstance(body, dict) else {"text": body}
    if ok:
        agent.say("\n# The source is right again: re-run the pipeline that read the wrong amount.")
        reason = f"salesforce Amount of {INITECH_OPPORTUNITY_ID} corrected (audit {result.get('audit_id')})"
        await agent.call("ops.rerun_job", {"job": JOB, "mode": "full", "reason": reason})
    return {"ok": ok, **result}


async def revert(agent: Agent, audit_id: str) -> bool:
    """Put back the before-image an earlier patch recorded in the audit log (a second revert says the
    patch is already reverted and writes nothing)."""
    ok, body = await agent.call("salesforce.revert_patch", {"audit_id": audit_id})
    if ok and isinstance(body, dict) and body.get("status") == "already_reverted":
        agent.say(f"\n# Patch {audit_id} is already reverted: nothing was written.")
    return ok
