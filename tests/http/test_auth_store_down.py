"""A shared token store that cannot answer refuses every caller with 503, never a 500 or a pass."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import anyio
import httpx
import psycopg
import pytest
from psycopg import sql
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send
from tests.conftest import PG_DSN

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.http.auth import AuthMiddleware
from mcp_gateway.identity.agents import PostgresAgentStore


async def _inner(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("inner app")(scope, receive, send)


@pytest.mark.anyio
async def test_a_token_store_that_cannot_be_read_answers_503_and_lets_nobody_in(
    tmp_path: Path, pg_schema: str
) -> None:
    agents = PostgresAgentStore(PG_DSN, pg_schema, cache_seconds=0.0)
    _, token = agents.create("ops-agent")
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    async with AuditLog(sink) as log:
        app = AuthMiddleware(_inner, agents=agents, audit=log, metadata_url="http://gw/.well-known/x")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            headers = {"Authorization": f"Bearer {token}"}
            assert (await client.post("/mcp", headers=headers)).text == "inner app"
            # The shared database loses the store (an outage, a bad restore): the token cannot be checked.
            with psycopg.connect(PG_DSN, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(pg_schema)))
            refused = await client.post("/mcp", headers=headers)
    agents.close()
    sink.close()
    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    assert json.loads(refused.text)["error"] == "temporarily_unavailable"
    assert "inner app" not in refused.text and PG_DSN not in refused.text


def _waiting_on_lock(schema: str) -> bool:
    with psycopg.connect(PG_DSN, autocommit=True) as probe:
        row = probe.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
            (f"%{schema}%agent_tokens%",),
        ).fetchone()
    return row is not None and row[0] > 0


@pytest.mark.anyio
async def test_a_slow_token_store_stalls_only_the_callers_it_must_answer(
    tmp_path: Path, pg_schema: str
) -> None:
    agents = PostgresAgentStore(PG_DSN, pg_schema, cache_seconds=0.9)
    _, known = agents.create("ops-agent")
    _, fresh = agents.create("other-agent")
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    async with AuditLog(sink) as log:
        app = AuthMiddleware(_inner, agents=agents, audit=log, metadata_url="http://gw/.well-known/x")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            assert (
                await client.post("/mcp", headers={"Authorization": f"Bearer {known}"})
            ).status_code == 200
            # Another session holds the token table: a check that must read it waits for the lock.
            blocker = psycopg.connect(PG_DSN)
            blocker.execute(
                sql.SQL("LOCK TABLE {}.agent_tokens IN ACCESS EXCLUSIVE MODE").format(
                    sql.Identifier(pg_schema)
                )
            )
            # Released after 5 s whatever happens: a check run on the event loop would otherwise hold
            # the loop, and this test, for good.
            release = threading.Timer(5.0, blocker.rollback)
            release.start()
            waiting: list[httpx.Response] = []
            try:
                async with anyio.create_task_group() as group:

                    async def slow() -> None:
                        waiting.append(
                            await client.post("/mcp", headers={"Authorization": f"Bearer {fresh}"})
                        )

                    group.start_soon(slow)
                    with anyio.fail_after(4.0):
                        while not _waiting_on_lock(pg_schema):
                            await anyio.sleep(0.01)
                    # The remembered token is answered while the other check waits on the database.
                    with anyio.fail_after(0.5):
                        served = await client.post("/mcp", headers={"Authorization": f"Bearer {known}"})
                    assert served.status_code == 200 and not waiting
                    release.cancel()
                    blocker.rollback()  # the waiting check completes
            finally:
                release.cancel()
                blocker.close()
            assert waiting[0].status_code == 200
    agents.close()
    sink.close()
