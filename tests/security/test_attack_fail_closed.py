"""Attack on the audit store: a gateway whose audit log cannot be written must refuse every call.

A real ``SQLiteAuditSink`` (configured by the normal settings) is made (a) locked, by another
connection holding ``BEGIN EXCLUSIVE``; (b) full, by capping ``max_page_count`` on the sink's own
connection; (c) unwritable, by moving the file away and then putting an impostor in its place. Each
time a storm of calls from two agents in both protocol eras is refused, 100 %, with a tool error that
says ``audit log unavailable``, and none reaches the upstream. Then the store recovers, the same
gateway serves again without a restart, and ``mcp-gateway audit verify`` passes.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from conftest import ERAS, GatewayFactory, RunningGateway, connect
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.cli import app

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - tool: leaky.echo
  agent-b:
    grants:
      - tool: leaky.echo
"""

PER_AGENT = 10  # two agents: 20 calls a storm, under the default 16 calls in flight per agent


def _text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def sink_of(gw: RunningGateway) -> SQLiteAuditSink:
    sink = gw.runtime.sink
    assert isinstance(sink, SQLiteAuditSink), "the gateway must use its configured SQLite audit store"
    return sink


async def storm(gw: RunningGateway, tag: str, size: int = 0) -> list[str]:
    """Call ``leaky.echo`` 20 times at once (agent-a in the legacy era, agent-b in the modern one);
    return each result's text, prefixed ``ERROR:`` when it is a tool error."""
    answers: list[str] = []

    async def one(client: Any, i: int) -> None:
        result = await client.call_tool("leaky.echo", {"text": f"{tag}-{i}-" + "x" * size})
        answers.append(("ERROR: " if result.is_error else "") + _text(result))

    with anyio.fail_after(60):
        async with (
            connect(gw.url, gw.tokens["agent-a"], ERAS[0]) as a,
            connect(gw.url, gw.tokens["agent-b"], ERAS[1]) as b,
            anyio.create_task_group() as tg,
        ):
            for i in range(PER_AGENT):
                tg.start_soon(one, a, i)
                tg.start_soon(one, b, PER_AGENT + i)
    return answers


def assert_all_refused(answers: list[str], why: str) -> None:
    """Every answer is the audit refusal, and its reason matches the regex ``why``."""
    assert len(answers) == 2 * PER_AGENT
    refused = [a for a in answers if a.startswith("ERROR: audit log unavailable")]
    assert refused == answers, [a[:120] for a in answers if a not in refused]
    # The refusal says why, so an operator reading the agent's transcript knows what to fix.
    assert all(re.search(why, a) for a in answers), answers[0]
    # ...without telling an agent where the store lives (the path goes to the gateway's log only).
    assert not any("audit.db" in a for a in answers), answers[0]


async def assert_serves_again(gw: RunningGateway, before: list[str]) -> None:
    answers = await storm(gw, "recovered")
    assert sorted(answers) == sorted(f"recovered-{i}-" for i in range(2 * PER_AGENT))
    assert calls(gw.call_log) == [*before, *["echo"] * 2 * PER_AGENT]
    # Each served call has its intent (with its unique text) and an outcome under the same call id.
    records = gw.audit()
    intents = {r.call_id: r.args.get("text") for r in records if r.kind == "intent"}
    assert set(answers) <= {intents.get(r.call_id) for r in records if r.kind == "outcome"}
    verified = CliRunner().invoke(app, ["audit", "verify", "-c", str(gw.config_path)])
    assert verified.exit_code == 0 and "chain intact" in verified.output, verified.output


async def warm_up(gw: RunningGateway) -> list[str]:
    """One good call first: the store worked before it broke."""
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        assert not (await client.call_tool("leaky.echo", {"text": "before"})).is_error
    assert calls(gw.call_log) == ["echo"]
    return calls(gw.call_log)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Another process's connection holding the database's write lock."""
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN EXCLUSIVE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_a_locked_audit_store_refuses_every_call_until_the_lock_is_released(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(POLICY, agents=("agent-a", "agent-b"), watch_policy=False)
    before = await warm_up(gw)
    records = len(gw.audit())
    with exclusive_lock(sink_of(gw).path):
        assert_all_refused(await storm(gw, "locked"), "database is locked")
        assert calls(gw.call_log) == before
    assert len(gw.audit()) == records  # nothing was written while it was locked, not even a part
    await assert_serves_again(gw, before)


async def test_a_full_audit_store_refuses_every_call_until_it_has_room_again(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(POLICY, agents=("agent-a", "agent-b"), watch_policy=False)
    before = await warm_up(gw)
    sink = sink_of(gw)
    # White-box: cap the file at its current size on the sink's own connection (the cap is per
    # connection). Each intent record then needs pages the file may not have: SQLITE_FULL.
    conn: sqlite3.Connection = sink._conn
    with sink._lock:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        assert conn.execute(f"PRAGMA max_page_count = {pages}").fetchone()[0] == pages
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    try:
        assert_all_refused(await storm(gw, "full", size=2 * page_size), "full")
        assert calls(gw.call_log) == before
    finally:
        with sink._lock:
            conn.execute("PRAGMA max_page_count = 1000000000")
    await assert_serves_again(gw, before)


async def test_an_audit_store_moved_away_or_replaced_refuses_every_call_until_it_is_back(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(POLICY, agents=("agent-a", "agent-b"), watch_policy=False)
    before = await warm_up(gw)
    path = sink_of(gw).path
    aside = path.with_name("audit.db.aside")
    os.replace(path, aside)
    try:
        assert_all_refused(await storm(gw, "removed"), "is gone|was moved")
        # An impostor at the same path (another file, e.g. restored from an old backup).
        shutil.copyfile(aside, path)
        assert_all_refused(await storm(gw, "replaced"), "replaced")
        assert calls(gw.call_log) == before
    finally:
        os.replace(aside, path)
    await assert_serves_again(gw, before)
