"""Console sessions held in the store, not in one process: a session made on one gateway is honoured by
another sharing the PostgreSQL ``store:`` (and logging out on either ends it on both), a restart keeps it
(SQLite in the data dir), and a forged, expired or no-longer-permitted cookie is refused."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from console_support import (
    PEOPLE,
    ConsoleGateway,
    client_for,
    close_clients,
    cookie_client,
    csrf_of,
    login,
    session_id_of,
    start_console_gateway,
    stop_console_gateway,
)
from psycopg import sql

from conftest import PG_DSN
from mcp_gateway.app.wiring import key_file_path
from mcp_gateway.console.sessions import STORE_FILE

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _closed_clients() -> Iterator[None]:
    yield from close_clients()


def _sent_to_login(answer: httpx.Response) -> bool:
    return answer.status_code == 303 and answer.headers["location"].endswith("/console/login")


def test_a_session_made_on_one_replica_is_honoured_and_ended_by_another_sharing_the_store(
    tmp_path: Path, pg_schema: str
) -> None:
    shared = {"store": {"url": PG_DSN, "schema": pg_schema}}
    first = start_console_gateway(tmp_path / "a", more=shared)
    second: ConsoleGateway | None = None
    try:
        key = key_file_path(first.settings)
        assert key is not None
        second = start_console_gateway(tmp_path / "b", more=shared, key_from=key)
        here = login(first, "april")
        there = cookie_client(second, session_id_of(here))
        page = there.get("/audit")
        assert page.status_code == 200 and "april · approver" in page.text
        # A decision on the second replica; its outcome line shows on the first (one store).
        approval_id = first.park("decided on the other replica")
        csrf = csrf_of(there)
        decided = there.post(f"/approvals/{approval_id}/approve", data={"csrf": csrf, "note": "fine"})
        assert decided.status_code == 303
        assert f"{approval_id} is approved" in here.get("/approvals").text
        assert f"{approval_id} is approved" not in there.get("/approvals").text  # shown once
        # Logging out on the second ends the session on the first as well.
        assert there.post("/logout", data={"csrf": csrf}).status_code == 303
        assert _sent_to_login(here.get("/audit"))
        assert here.post("/logout", data={"csrf": csrf}).status_code == 401
        # The store failing lets nobody in (and logs nobody in), on any replica.
        with psycopg.connect(PG_DSN, autocommit=True) as db:
            db.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(pg_schema, "console_sessions")))
        refused = here.get("/audit")
        assert refused.status_code == 503 and "session store is unavailable" in refused.text
        newcomer = client_for(second)
        nonce = newcomer.get("/login").text.split('name="nonce" value="', 1)[1].split('"', 1)[0]
        attempt = newcomer.post("/login", data={"nonce": nonce, "token": second.admin_tokens["alice"]})
        assert attempt.status_code == 503 and "mgw_console=" not in attempt.headers.get("set-cookie", "")
    finally:
        if second is not None:
            stop_console_gateway(second)
        stop_console_gateway(first)


def test_a_restart_keeps_sessions_and_refuses_forged_expired_or_unlisted_ones(tmp_path: Path) -> None:
    root = tmp_path / "gw"
    gw = start_console_gateway(root)
    try:
        alice_id = session_id_of(login(gw, "alice"))
        victor_id = session_id_of(login(gw, "victor"))
    finally:
        stop_console_gateway(gw)
    without_victor = {name: role for name, role in PEOPLE.items() if name != "victor"}
    again = start_console_gateway(root, {"enabled": True, "roles": without_victor})
    try:
        kept = cookie_client(again, alice_id)
        page = kept.get("/audit")
        assert page.status_code == 200 and "alice · admin" in page.text
        # Taken out of console.roles while the gateway was down: the old cookie opens nothing.
        assert _sent_to_login(cookie_client(again, victor_id).get("/audit"))
        stored_key = hashlib.sha256(alice_id.encode()).hexdigest()
        for forged in (secrets.token_urlsafe(32), stored_key, alice_id[:-1], alice_id + "A"):
            client = cookie_client(again, forged)
            assert _sent_to_login(client.get("/audit"))
            refused = client.post(
                "/chain/verify", headers={"X-CSRF-Token": "x", "Accept": "application/json"}
            )
            assert refused.status_code == 401
        db = sqlite3.connect(again.settings.data_dir / STORE_FILE)
        with db:
            db.execute("UPDATE console_sessions SET expires_at = 1 WHERE id_hash = ?", (stored_key,))
        db.close()
        assert _sent_to_login(kept.get("/audit"))
    finally:
        stop_console_gateway(again)
