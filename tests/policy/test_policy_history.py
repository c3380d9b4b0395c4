"""Policy history: each load recorded (start, reload, failure), the files of each version, diffs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import PG_DSN
from mcp_gateway.core.state import PolicyHolder
from mcp_gateway.errors import GatewayError
from mcp_gateway.policy.history import PolicyFiles, PolicyHistoryError, PolicyLoadEvent, policy_diff
from mcp_gateway.policy.history_store import (
    REPLICA,
    SQLPolicyHistory,
    open_postgres_history,
    open_sqlite_history,
)
from mcp_gateway.policy.version import policy_version

POLICY = "version: 1\nagents:\n  alice:\n    grants: [{id: alice-echo, tool: leaky.echo}]\n"
EDITED = POLICY.replace("alice-echo", "alice-echo-v2")
EXTRA = "version: 1\nagents:\n  bob:\n    grants: [{id: bob-echo, tool: leaky.echo}]\n"


@pytest.fixture(params=["sqlite", "postgres"])
def history(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLPolicyHistory]:
    """An empty policy history of each kind (PostgreSQL: a schema of its own, dropped afterwards)."""
    if request.param == "sqlite":
        store = open_sqlite_history(tmp_path / "data" / "policy-history.db")
    else:
        store = open_postgres_history(PG_DSN, request.getfixturevalue("pg_schema"))
    yield store
    store.close()


def files(*pairs: tuple[str, str]) -> PolicyFiles:
    return PolicyFiles(policy_version(pairs), pairs)


def test_a_diff_names_each_changed_added_and_removed_file_with_its_version() -> None:
    old = files(("a.yaml", POLICY), ("gone.yaml", EXTRA))
    new = files(("a.yaml", EDITED), ("new.yaml", EXTRA))
    diff = policy_diff(old, new)
    assert f"--- a/{old.version}/a.yaml\n+++ b/{new.version}/a.yaml\n" in diff
    assert "-    grants: [{id: alice-echo, tool: leaky.echo}]\n+    grants: [{id: alice-echo-v2," in diff
    assert f"--- a/{old.version}/gone.yaml\n+++ /dev/null\n" in diff
    assert f"--- /dev/null\n+++ b/{new.version}/new.yaml\n" in diff
    assert policy_diff(old, old) == ""


def test_a_file_without_a_final_newline_says_so_in_the_diff() -> None:
    diff = policy_diff(files(("a.yaml", "x: 1\n")), files(("a.yaml", "x: 2")))
    assert diff.endswith("+x: 2\n\\ No newline at end of file\n")


def load_event(
    at: float, pol: PolicyFiles | None, previous: str = "", problems: tuple[str, ...] = ()
) -> PolicyLoadEvent:
    return PolicyLoadEvent(
        at=at,
        ok=pol is not None,
        version=pol.version if pol is not None else previous,
        previous=previous,
        path="/etc/policies",
        trigger="watch",
        replica=REPLICA,
        problems=problems,
        files=pol,
    )


def test_loads_are_listed_newest_first_and_each_version_is_stored_once(history: SQLPolicyHistory) -> None:
    one, two = files(("a.yaml", POLICY)), files(("a.yaml", EDITED))
    history.record(load_event(1.0, one))
    history.record(load_event(2.0, two, one.version))
    history.record(load_event(3.0, None, two.version, ("a.yaml:2: bad indentation",)))
    history.record(load_event(4.0, one, two.version))  # back to the first version: its files are kept once
    loads = history.loads()
    assert [(e.at, e.ok, e.version, e.previous) for e in loads] == [
        (4.0, True, one.version, two.version),
        (3.0, False, two.version, two.version),
        (2.0, True, two.version, one.version),
        (1.0, True, one.version, ""),
    ]
    assert loads[0].replica == REPLICA and loads[0].trigger == "watch" and loads[0].path == "/etc/policies"
    page = history.loads(limit=2, before_id=loads[1].id)
    assert [e.at for e in page] == [2.0, 1.0]
    failure = history.last_failure()
    assert failure is not None and failure.at == 3.0 and failure.problems == ("a.yaml:2: bad indentation",)
    assert history.files(one.version) == one and history.files(two.version) == two
    assert history.diff(one.version, two.version) == policy_diff(one, two)


def test_a_diff_with_an_unknown_version_is_a_clear_error(history: SQLPolicyHistory) -> None:
    one = files(("a.yaml", POLICY))
    history.record(load_event(1.0, one))
    with pytest.raises(PolicyHistoryError, match=r"^no policy version `deadbeef0000` in the policy history$"):
        history.diff(one.version, "deadbeef0000")
    assert history.last_failure() is None and history.files("deadbeef0000") is None


def test_the_policy_holder_records_its_start_every_reload_and_a_failed_one(
    history: SQLPolicyHistory, tmp_path: Path
) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "a.yaml").write_text(POLICY, encoding="utf-8")
    holder = PolicyHolder.load(folder, history=history)
    first = holder.version
    (folder / "a.yaml").write_text(EDITED, encoding="utf-8")
    (folder / "b.yaml").write_text(EXTRA, encoding="utf-8")
    assert holder.reload("sighup") is None
    second = holder.version
    (folder / "b.yaml").write_text("version: 1\nagents: [", encoding="utf-8")
    error = holder.reload("watch")
    assert error is not None and holder.version == second  # the last good policy stays in force
    start, reload, failed = reversed(history.loads())
    assert (start.trigger, start.ok, start.version, start.previous) == ("start", True, first, "")
    assert (reload.trigger, reload.ok, reload.version, reload.previous) == ("sighup", True, second, first)
    assert (failed.trigger, failed.ok, failed.version) == ("watch", False, second)
    last = history.last_failure()
    assert last is not None and last.problems == tuple(error.problems) and "b.yaml" in last.problems[0]
    diff = history.diff(first, second)
    assert "+    grants: [{id: alice-echo-v2, tool: leaky.echo}]" in diff
    assert f"+++ b/{second}/b.yaml" in diff and "+  bob:" in diff


def test_a_history_that_cannot_be_written_never_fails_a_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def record(self, event: PolicyLoadEvent) -> None:
            raise GatewayError("the policy history store `x` failed: disk I/O error")

        def close(self) -> None:
            pass

    (tmp_path / "a.yaml").write_text(POLICY, encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="mcp_gateway.core.state"):
        holder = PolicyHolder.load(tmp_path / "a.yaml", history=Broken())
        (tmp_path / "a.yaml").write_text(EDITED, encoding="utf-8")
        assert holder.reload() is None
    assert "alice-echo-v2" in str(holder.policy.agents["alice"])
    assert [r.getMessage() for r in caplog.records].count(
        "policy history not recorded: the policy history store `x` failed: disk I/O error"
    ) == 2


@pytest.mark.anyio
async def test_a_gateway_records_its_start_and_a_reload_through_the_http_reload_path(tmp_path: Path) -> None:
    from mcp_gateway.app.policy_history import open_policy_history
    from mcp_gateway.app.wiring import build_runtime
    from mcp_gateway.config import Settings
    from mcp_gateway.http.app import reload_policy

    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "policy.yaml").write_text(POLICY, encoding="utf-8")
    settings = Settings.model_validate({"data_dir": str(tmp_path / "data"), "policies": str(policies)})
    runtime = build_runtime(settings, master_key_env=None)
    try:
        (policies / "policy.yaml").write_text(EDITED, encoding="utf-8")
        assert await reload_policy(runtime.gateway)
    finally:
        runtime.close()
    reader = open_policy_history(settings)
    try:
        reload, start = reader.loads()
        assert (start.trigger, reload.trigger) == ("start", "reload")
        assert reload.previous == start.version and reload.version != start.version
        assert "alice-echo-v2" in reader.diff(start.version, reload.version)
    finally:
        reader.close()
