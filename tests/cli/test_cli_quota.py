"""``mcp-gateway quota show`` / ``quota reset``: against SQLite and the real Redis; reset is audited."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from typer.testing import CliRunner

from conftest import free_port
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.cli import app
from mcp_gateway.quotas.model import quota_checks
from mcp_gateway.quotas.store import RedisQuotaStore, SQLiteQuotaStore

REDIS_URL = "redis://127.0.0.1:6379/0"
POLICY = """\
version: 1
agents:
  ops-agent:
    rate: ["20/day"]
    grants:
      - id: ops-rerun
        tool: ops.rerun_job
        rate: ["3/hour"]
      - id: ops-read
        tool: "data.*"
        rate: ["50/hour"]
      - id: ops-plain
        tool: time.now
  other-agent:
    grants:
      - id: other-rerun
        tool: ops.rerun_job
        rate: ["3/hour"]
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(params=["sqlite", "redis"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A gateway config whose quota store (SQLite or Redis, own key prefix) holds some counted calls."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(POLICY)
    prefix = f"mgw-test-cli:{uuid.uuid4().hex}:"
    settings: dict[str, object] = {"data_dir": "data", "policies": "policies"}
    if request.param == "redis":
        settings["quotas"] = {"store": "redis", "redis_url": REDIS_URL, "key_prefix": prefix}
        store: SQLiteQuotaStore | RedisQuotaStore = RedisQuotaStore(REDIS_URL, key_prefix=prefix)
    else:
        store = SQLiteQuotaStore(tmp_path / "data" / "quotas.db")
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(settings))
    now = time.time()
    try:
        for tool, rate, calls in (("ops.rerun_job", "3/hour", 3), ("data.query", "50/hour", 2)):
            checks = quota_checks("ops-agent", tool, tool_limits=[rate], agent_limits=["20/day"])
            for i in range(calls):
                store.check_and_hit(checks, now - 60 + i)
        store.check_and_hit(quota_checks("other-agent", "ops.rerun_job", tool_limits=["3/hour"]), now - 10)
    finally:
        store.close()
    yield tmp_path / "gateway.yaml"
    if request.param == "redis":
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def _shown(config: Path, *extra: str) -> dict[tuple[str, str], int]:
    code, out, err = run("quota", "show", "-c", str(config), "--json", *extra)
    assert code == 0, err
    return {(row["agent"], row["tool"]): row["used"] for row in map(json.loads, out.splitlines())}


def _reset_records(config: Path) -> list[dict[str, object]]:
    sink = SQLiteAuditSink(config.parent / "data" / "audit.db", read_only=True)
    try:
        return [{"status": rec.status, **rec.detail} for rec in sink.records() if rec.kind == "quota_reset"]
    finally:
        sink.close()


def test_quota_show_lists_each_quota_in_use_with_human_times(config: Path) -> None:
    code, out, _ = run("quota", "show", "-c", str(config))
    assert code == 0
    lines = sorted(out.splitlines())
    assert len(lines) == 4
    full = next(line for line in lines if "ops.rerun_job" in line and line.startswith("ops-agent"))
    assert "3/hour" in full and "used 3/3" in full and "full until 20" in full and "+00:00" in full
    overall = next(line for line in lines if "(all tools)" in line)
    assert overall.startswith("ops-agent\t(all tools)\t20/day\tused 5/20\troom")


def test_quota_show_json_has_raw_values_and_filters_by_agent(config: Path) -> None:
    assert _shown(config, "--agent", "other-agent") == {("other-agent", "ops.rerun_job"): 1}
    code, out, _ = run("quota", "show", "-c", str(config), "--json", "--agent", "ops-agent")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    full = next(row for row in rows if row["tool"] == "ops.rerun_job")
    assert isinstance(full["room_at"], float) and full["room_at"] > time.time()
    assert (full["used"], full["amount"], full["seconds"], full["limit"]) == (3, 3, 3600, "3/hour")


def test_quota_reset_of_an_agent_forgets_its_counts_only_and_is_audited(config: Path) -> None:
    code, out, err = run("quota", "reset", "ops-agent", "-c", str(config))
    assert code == 0, err
    assert "reset 3 quota(s) of agent `ops-agent`" in out
    assert _shown(config) == {("other-agent", "ops.rerun_job"): 1}
    requested, done = _reset_records(config)
    assert (requested["status"], requested["agent"], requested["via"]) == ("requested", "ops-agent", "cli")
    assert {(q["tool"], q["limit"], q["used"]) for q in requested["quotas"]} == {  # type: ignore[union-attr]
        ("ops.rerun_job", "3/hour", 3),
        ("data.query", "50/hour", 2),
        ("*", "20/day", 5),
    }
    assert (done["status"], done["reset"]) == ("ok", 3)


def test_quota_reset_of_one_grant_forgets_only_that_grants_quotas(config: Path) -> None:
    code, _, err = run("quota", "reset", "ops-agent", "--grant", "ops-read", "-c", str(config))
    assert code == 0, err
    assert _shown(config) == {
        ("ops-agent", "ops.rerun_job"): 3,
        ("ops-agent", "*"): 5,  # the agent-wide quota belongs to no grant
        ("other-agent", "ops.rerun_job"): 1,
    }
    (requested, _) = _reset_records(config)
    assert requested["grant"] == "ops-read"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ops-agent", "--grant", "nope"], "no grant `nope` in the policy"),
        (
            ["ops-agent", "--grant", "other-rerun"],
            "grant `other-rerun` is agent `other-agent`'s, not `ops-agent`'s",
        ),
        (["ops-agent", "--grant", "ops-plain"], "grant `ops-plain` sets no quota"),
        (["ghost"], "agent `ghost` has no quota in use: nothing to reset"),
    ],
    ids=["unknown grant", "another agent's grant", "grant without quota", "agent without use"],
)
def test_quota_reset_refuses_clearly_and_changes_nothing(config: Path, args: list[str], message: str) -> None:
    before = _shown(config)
    code, out, err = run("quota", "reset", *args, "-c", str(config))
    assert code == 1 and err.startswith(f"error: {message}") and err.count("\n") == 1 and out == ""
    assert _shown(config) == before
    assert not (config.parent / "data" / "audit.db").exists()  # nothing done, nothing recorded


def test_quota_show_without_a_store_fails_in_one_line_and_creates_none(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text("data_dir: data\n")
    code, out, err = run("quota", "show", "-c", str(tmp_path / "gateway.yaml"))
    assert code == 1 and out == "" and err.startswith("error: no quota store at") and err.count("\n") == 1
    assert not (tmp_path / "data").exists()


def test_quota_show_without_a_config_fails_saying_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MCP_GATEWAY_CONFIG", raising=False)
    code, _, err = run("quota", "show")
    assert code == 1 and "no gateway config found" in err
    assert list(tmp_path.iterdir()) == []


def test_quota_reset_refuses_when_redis_is_unreachable_and_records_nothing(tmp_path: Path) -> None:
    settings = {
        "data_dir": "data",
        "quotas": {"store": "redis", "redis_url": f"redis://:pw-hidden-9@127.0.0.1:{free_port()}/0"},
    }
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(settings))
    for command in (["reset", "ops-agent"], ["show"]):
        code, out, err = run("quota", *command, "-c", str(tmp_path / "gateway.yaml"))
        assert code == 1 and out == "" and err.count("\n") == 1
        assert err.startswith("error: the quota store (redis) cannot be read") and "pw-hidden-9" not in err
    assert not (tmp_path / "data" / "audit.db").exists()


def test_quota_reset_refuses_when_the_audit_cannot_record_it(config: Path) -> None:
    settings = yaml.safe_load(config.read_text())
    (config.parent / "not-a-db").mkdir()
    settings["audit"] = {"path": str(config.parent / "not-a-db")}
    config.write_text(yaml.safe_dump(settings))
    before = _shown(config)
    code, out, err = run("quota", "reset", "ops-agent", "-c", str(config))
    assert code == 1 and out == "" and err.startswith("error: ") and "audit" in err
    assert _shown(config) == before  # no audit, no act
