"""Console sessions and settings: random expiring ids kept as hashes in SQLite or the shared PostgreSQL
schema (so another store on the same file or schema, a restart or another replica, sees them), per-session
CSRF tokens, role order, config checks."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from pydantic import ValidationError

from conftest import PG_DSN
from mcp_gateway.app.console import keep_sessions
from mcp_gateway.app.databases import postgres_components
from mcp_gateway.config import Settings, SharedStore
from mcp_gateway.console.sessions import STORE_FILE, SessionStore, open_session_store
from mcp_gateway.errors import StoreError
from mcp_gateway.identity.console import ConsoleSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Opener = Callable[..., SessionStore]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the same session store again on each call (a restart, or another replica)."""
    opened: list[SessionStore] = []
    shared = None
    if request.param == "postgres":
        schema = request.getfixturevalue("pg_schema")
        shared = SharedStore.model_validate({"url": PG_DSN, "schema": schema})

    def open_one(
        lifetime: float = 60, max_sessions: int = 1000, clock: Callable[[], float] | None = None
    ) -> SessionStore:
        store = open_session_store(
            tmp_path, shared, lifetime=lifetime, max_sessions=max_sessions, clock=clock or FakeClock()
        )
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


def test_a_session_lives_until_its_expiry_and_not_a_second_longer(open_store: Opener) -> None:
    clock = FakeClock()
    store = open_store(clock=clock)
    session_id, session = store.create("alice", "admin", via="admin_token", token_id="t1")
    clock.now += 59.9
    assert store.get(session_id) == session
    clock.now += 0.1
    assert store.get(session_id) is None


def test_a_session_made_by_one_store_is_honoured_and_ended_by_another_on_the_same_database(
    open_store: Opener,
) -> None:
    clock = FakeClock()
    here, there = open_store(clock=clock), open_store(clock=clock)
    session_id, session = here.create("april", "approver", via="admin_token", token_id="t2")
    assert there.get(session_id) == session
    there.end(session_id)
    assert here.get(session_id) is None and there.get(session_id) is None


def test_a_session_survives_closing_and_reopening_its_store(open_store: Opener) -> None:
    clock = FakeClock()
    first = open_store(clock=clock)
    session_id, session = first.create("victor", "viewer", via="oauth", token_id="jti-1")
    first.close()
    assert open_store(clock=clock).get(session_id) == session


def test_only_the_ids_hash_is_stored_never_the_id(open_store: Opener, tmp_path: Path) -> None:
    store = open_store()
    session_id, session = store.create("alice", "admin", via="admin_token", token_id="t1")
    assert session.key == hashlib.sha256(session_id.encode()).hexdigest()
    if (tmp_path / STORE_FILE).exists():
        with sqlite3.connect(tmp_path / STORE_FILE) as db:
            rows = db.execute("SELECT * FROM console_sessions").fetchall()
        assert rows and session_id not in repr(rows) and session.key in repr(rows)


def test_ids_and_csrf_tokens_are_random_and_forged_or_ended_ids_are_refused(open_store: Opener) -> None:
    store = open_store()
    first_id, first = store.create("alice", "admin", via="admin_token", token_id="t1")
    second_id, second = store.create("alice", "admin", via="admin_token", token_id="t1")
    assert first_id != second_id and first.csrf != second.csrf and len(first_id) >= 43
    store.end(first_id)
    assert store.get(first_id) is None and store.get(second_id) == second
    forged = first.key  # the stored hash, presented as if it were an id
    assert store.get(forged) is None and store.get(second_id + "x") is None
    assert store.get("") is None and store.get("x" * 500) is None


def test_expired_sessions_are_pruned_and_a_login_prunes_too(open_store: Opener) -> None:
    clock = FakeClock()
    store = open_store(clock=clock)
    for person in ("a", "b"):
        store.create(person, "viewer", via="admin_token", token_id="t")
    clock.now += 61
    assert store.count() == 2 and store.prune() == 2 and store.count() == 0
    store.create("c", "viewer", via="admin_token", token_id="t")
    clock.now += 61
    store.create("d", "viewer", via="admin_token", token_id="t")
    assert store.count() == 1


def test_the_oldest_session_is_dropped_past_the_bound(open_store: Opener) -> None:
    clock = FakeClock()
    store = open_store(max_sessions=2, clock=clock)
    ids = []
    for i in range(3):
        clock.now += 1
        ids.append(store.create(f"p{i}", "viewer", via="admin_token", token_id="t")[0])
    assert [store.get(i) is not None for i in ids] == [False, True, True]


def test_an_outcome_line_is_shown_once_on_any_replica(open_store: Opener) -> None:
    here, there = open_store(), open_store()
    session_id, session = here.create("april", "approver", via="admin_token", token_id="t")
    here.set_flash(session, "ap_1 is approved", True)
    seen = there.get(session_id)
    assert seen is not None and seen.flash == (True, "ap_1 is approved")
    there.take_flash(seen)
    again = here.get(session_id)
    assert again is not None and again.flash is None


@pytest.mark.parametrize(
    ("role", "needed", "allowed"),
    [
        ("viewer", "viewer", True),
        ("viewer", "approver", False),
        ("approver", "approver", True),
        ("approver", "admin", False),
        ("admin", "approver", True),
    ],
)
def test_roles_rank_viewer_below_approver_below_admin(
    role: str, needed: str, allowed: bool, tmp_path: Path
) -> None:
    store = open_session_store(tmp_path, None, lifetime=60)
    try:
        session = store.create("p", role, via="admin_token", token_id="t")[1]  # type: ignore[arg-type]
        assert session.may(needed) is allowed  # type: ignore[arg-type]
    finally:
        store.close()


def test_a_csrf_token_must_match_exactly(tmp_path: Path) -> None:
    store = open_session_store(tmp_path, None, lifetime=60)
    try:
        session = store.create("p", "admin", via="admin_token", token_id="t")[1]
    finally:
        store.close()
    assert session.csrf_ok(session.csrf)
    assert not session.csrf_ok(None) and not session.csrf_ok("") and not session.csrf_ok(session.csrf + "x")


def test_the_console_sessions_migration_is_listed_for_a_shared_store_with_the_console_on(
    tmp_path: Path,
) -> None:
    base = {"data_dir": str(tmp_path), "store": {"url": PG_DSN, "schema": "x"}}
    on = Settings.model_validate({**base, "console": {"enabled": True}})
    off = Settings.model_validate(base)
    assert "console_sessions" in [c.name for c in postgres_components(on)]
    assert "console_sessions" not in [c.name for c in postgres_components(off)]


def test_the_console_is_off_by_default_and_refuses_unknown_roles_and_taken_paths() -> None:
    assert ConsoleSettings().enabled is False and ConsoleSettings().path == "/console"
    assert ConsoleSettings().oauth_audience is None
    with pytest.raises(ValidationError):
        ConsoleSettings(roles={"alice": "root"})  # type: ignore[dict-item]
    for path in ("/mcp", "/admin/x", "console", "/Console/", "/x y"):
        with pytest.raises(ValidationError):
            ConsoleSettings(path=path)


@pytest.mark.anyio
async def test_the_console_service_prunes_expired_sessions_and_closes_the_store_when_stopped(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    store = open_session_store(tmp_path, None, lifetime=60, clock=clock)
    store.create("alice", "admin", via="admin_token", token_id="t")
    clock.now += 61
    async with anyio.create_task_group() as tg:
        tg.start_soon(keep_sessions(store, every=0.01))
        with anyio.fail_after(10):
            while store.count():
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    with pytest.raises(StoreError):
        store.count()
