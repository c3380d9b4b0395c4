"""A shared token store that cannot answer refuses every caller with 503, never a 500 or a pass."""

from __future__ import annotations

import json
from pathlib import Path

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
