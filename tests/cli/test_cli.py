"""The admin CLI, run as users run it (typer's runner in-process; the quickstart as a real process)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.cli import app
from mcp_gateway.types import AuditEvent

runner = CliRunner()

POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - id: a-echo
        tool: leaky.echo
        args:
          text: {max_length: 10}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(POLICY)
    path = tmp_path / "gateway.yaml"
    path.write_text("data_dir: data\npolicies: policies\n")
    return path


def _run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=stdin, env=env)
    return result.exit_code, result.stdout, result.stderr


def test_agents_create_prints_the_token_once_and_stores_only_a_hash(config: Path) -> None:
    code, out, _ = _run("agents", "create", "agent-a", "-c", str(config), "--expires", "30d")
    assert code == 0
    token = out.strip()
    assert token.startswith("mgw_")
    db = (config.parent / "data" / "agents.db").read_bytes()
    assert token.encode() not in db and token[17:].encode() not in db
    code, out, _ = _run("agents", "list", "-c", str(config))
    assert code == 0 and "agent-a" in out and "live" in out and token not in out
    code, out, _ = _run("agents", "revoke", "agent-a", "-c", str(config))
    assert code == 0 and "revoked 1" in out
    assert "revoked" in _run("agents", "list", "-c", str(config))[1]


@pytest.mark.parametrize("group", ["agents", "admin"])
def test_issuing_and_revoking_tokens_is_audited_without_the_token(config: Path, group: str) -> None:
    code, out, _ = _run(group, "create", "ops-1", "-c", str(config))
    assert code == 0
    token = out.strip()
    assert _run(group, "revoke", "ops-1", "-c", str(config))[0] == 0
    assert _run(group, "revoke", "ops-1", "-c", str(config))[0] != 0  # nothing left to revoke
    sink = SQLiteAuditSink(config.parent / "data" / "audit.db")
    try:
        records = sink.records()
    finally:
        sink.close()
    trail = [(r.kind, r.status, r.detail.get("target")) for r in records]
    assert trail == [
        ("token_issue", "requested", "ops-1"),
        ("token_issue", "ok", "ops-1"),
        ("token_revoke", "requested", "ops-1"),
        ("token_revoke", "ok", "ops-1"),
        ("token_revoke", "requested", "ops-1"),
        ("token_revoke", "none_matched", "ops-1"),
    ]
    issued = records[1].detail
    assert issued["token_id"] in token and issued["holder_kind"] == (
        "agent" if group == "agents" else "admin"
    )
    assert all(token not in json.dumps(r.detail) and token[17:] not in json.dumps(r.detail) for r in records)


def test_no_token_is_issued_when_the_audit_store_cannot_be_written(config: Path) -> None:
    (config.parent / "data").mkdir()
    (config.parent / "data" / "audit.db").mkdir()  # a directory where the audit file must go
    code, out, err = _run("agents", "create", "agent-a", "-c", str(config))
    assert code != 0 and "mgw_" not in out and "audit store" in err
    assert _run("agents", "list", "-c", str(config))[1].strip() == ""


def test_vault_put_reads_the_value_from_stdin_and_no_command_prints_it(config: Path) -> None:
    secret = "s3cr3t-value-for-the-test"
    assert _run("vault", "init", "-c", str(config))[0] == 0
    key_file = config.parent / "data" / "master.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    code, out, err = _run("vault", "put", "db-password", "-c", str(config), stdin=secret + "\n")
    assert code == 0 and secret not in out + err
    code, out, err = _run("vault", "list", "-c", str(config))
    assert code == 0 and "db-password" in out and secret not in out + err
    vault_db = (config.parent / "data" / "vault.db").read_bytes()
    assert secret.encode() not in vault_db


def test_vault_rotate_master_rewraps_every_secret_and_they_still_resolve(config: Path) -> None:
    from mcp_gateway.app.wiring import open_vault
    from mcp_gateway.config import load_settings

    _run("vault", "init", "-c", str(config))
    for i in range(3):
        _run("vault", "put", f"s{i}", "-c", str(config), stdin=f"value-number-{i}")
    before = json.loads((config.parent / "data" / "master.key").read_text())["current"]
    code, out, _ = _run("vault", "rotate-master", "-c", str(config))
    # The three secrets, plus the audit's own three keys (made by the first audited vault command).
    assert code == 0 and "re-wrapped 6" in out
    after = json.loads((config.parent / "data" / "master.key").read_text())
    assert after["current"] != before and list(after["keys"]) == [after["current"]]
    vault = open_vault(load_settings(config), master_key_env=None)
    assert [vault.resolve(f"s{i}").reveal() for i in range(3)] == [
        f"value-number-{i}".encode() for i in range(3)
    ]


def test_policy_check_reports_every_error_with_file_and_line(config: Path) -> None:
    bad = config.parent / "policies" / "bad.yaml"
    bad.write_text("version: 1\nagents:\n  x:\n    grants:\n      - tool: a\n        bogus: 1\n")
    code, _, err = _run("policy", "check", "-c", str(config))
    assert code == 1
    assert f"{bad}:6" in err and "bogus" in err
    bad.unlink()
    code, out, _ = _run("policy", "check", "-c", str(config))
    assert code == 0 and out.startswith("ok")
    # The version a gateway serving these files reports (in /readyz and each call's records).
    from mcp_gateway.policy.load import load_versioned_policy

    version = load_versioned_policy(config.parent / "policies")[1]
    assert out.rstrip().endswith(f"; version {version})") and len(version) == 12


def test_policy_explain_prints_the_decision_and_the_rule_that_decided(config: Path) -> None:
    code, out, _ = _run("policy", "explain", "agent-a", "leaky.echo", '{"text": "hi"}', "-c", str(config))
    assert code == 0 and "allow" in out and "a-echo" in out
    code, out, _ = _run(
        "policy", "explain", "agent-a", "leaky.echo", '{"text": "far too long"}', "-c", str(config)
    )
    assert code == 0 and "deny" in out and "max_length" in out
    code, _, err = _run("policy", "explain", "agent-a", "leaky.echo", "{not json", "-c", str(config))
    assert code == 1 and "not valid JSON" in err


def _audit_db(config: Path, n: int = 6) -> Path:
    path = config.parent / "data" / "audit.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    sink = SQLiteAuditSink(path)
    sink.append(
        [AuditEvent(kind="intent", call_id=str(i), agent="a", tool="t", args={"i": i}) for i in range(n)]
    )
    sink.close()
    return path


def _tamper(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("statements", "kind", "seq"),
    [
        (["UPDATE audit SET args = '{\"i\": 99}' WHERE seq = 3"], "modified", 3),
        (["DELETE FROM audit WHERE seq = 3"], "deleted", 3),
        (
            [
                # Make room at seq 4 and forge a record there that links to seq 3's hash.
                "UPDATE audit SET seq = seq + 100 WHERE seq >= 4",
                "UPDATE audit SET seq = seq - 99 WHERE seq >= 100",
                "INSERT INTO audit SELECT 4, ts, kind, 'forged', agent, tool, decision, status, args, detail,"
                " hash, hash FROM audit WHERE seq = 3",
            ],
            "inserted",
            4,
        ),
        (
            [
                "UPDATE audit SET seq = -1 WHERE seq = 2",
                "UPDATE audit SET seq = 2 WHERE seq = 4",
                "UPDATE audit SET seq = 4 WHERE seq = -1",
            ],
            "reordered",
            None,
        ),
    ],
)
def test_audit_verify_names_an_edited_a_deleted_an_inserted_and_a_reordered_row(
    config: Path, statements: list[str], kind: str, seq: int | None
) -> None:
    path = _audit_db(config)
    # Intact, but written without a vault: nothing authenticates the records (exit 3, not 0).
    code, _, err = _run("audit", "verify", "-c", str(config))
    assert code == 3 and "records 1 to 6 are not authenticated" in err
    _tamper(path, *statements)
    code, out, err = _run("audit", "verify", "-c", str(config))
    assert code == 1 and "audit log fails verification" in err
    assert f": {kind}:" in out
    if seq is not None:
        assert f"seq {seq}: {kind}" in out


def test_audit_query_filters_and_prints_json(config: Path) -> None:
    _audit_db(config)
    code, out, _ = _run("audit", "query", "-c", str(config), "--agent", "a", "--json", "--limit", "2")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2 and all(r["agent"] == "a" for r in rows)
    code, out, _ = _run("audit", "tail", "-c", str(config), "-n", "3")
    assert code == 0 and len(out.splitlines()) == 1 + 3 and out.startswith("SEQ")  # a header, then 3


@pytest.mark.e2e
def test_quickstart_sets_up_a_demo_and_prints_how_to_connect(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "mcp-gateway"
    result = subprocess.run(
        [str(exe), "quickstart", "--dir", str(tmp_path / "qs"), "--no-serve", "--port", "8799"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MCP_GATEWAY_MASTER_KEY": ""},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "http://127.0.0.1:8799/mcp" in result.stdout and "Authorization: Bearer mgw_" in result.stdout
    assert (tmp_path / "qs" / "data" / "master.key").stat().st_mode & 0o777 == 0o600
    check = subprocess.run(
        [str(exe), "policy", "check", "-c", str(tmp_path / "qs" / "gateway.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr


@pytest.mark.e2e
@pytest.mark.anyio
async def test_the_quickstart_gateway_serves_the_demo_agent_and_reloads_policy_on_sighup(
    tmp_path: Path,
) -> None:
    import signal

    import anyio

    from conftest import connect, free_port, wait_until

    exe = Path(sys.executable).parent / "mcp-gateway"
    port = free_port()
    prepared = subprocess.run(
        [str(exe), "quickstart", "--dir", str(tmp_path / "qs"), "--no-serve", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = next(line.split()[1] for line in prepared.stdout.splitlines() if line.strip().startswith("token"))
    config = tmp_path / "qs" / "gateway.yaml"
    # Turn the file watch off so that only SIGHUP can make the new policy take effect.
    config.write_text(config.read_text().replace("  port:", "  watch_policy: false\n  port:"))
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([str(exe), "serve", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        import httpx

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=30, what="quickstart gateway")
        url = f"http://127.0.0.1:{port}/mcp"
        async with connect(url, token) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"time.get_current_time", "time.convert_time", "data.switch_in", "ops.rerun_job"} <= names
            assert "data.delete_rows" not in names  # the demo grants no deletes
            result = await client.call_tool("time.get_current_time", {"timezone": "Europe/Paris"})
            assert not result.is_error and "Europe/Paris" in result.content[0].text  # type: ignore[union-attr]
            refused = await client.call_tool("time.get_current_time", {"timezone": "Asia/Seoul"})
            assert refused.is_error and "`timezone`" in refused.content[0].text  # type: ignore[union-attr]
        policy = tmp_path / "qs" / "policies" / "demo.yaml"
        policy.write_text(policy.read_text().replace("Asia/Tokyo]", "Asia/Tokyo, Asia/Seoul]"))
        proc.send_signal(signal.SIGHUP)

        async def seoul_allowed() -> bool:
            async with connect(url, token) as client:
                res = await client.call_tool("time.get_current_time", {"timezone": "Asia/Seoul"})
                return not res.is_error

        with anyio.fail_after(20):
            while not await seoul_allowed():
                await anyio.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    code, out, _ = _run("audit", "verify", "-c", str(config))
    assert code == 0, out
    code, out, _ = _run("audit", "query", "-c", str(config), "--kind", "policy_reload", "--json")
    assert any(json.loads(line)["status"] == "ok" for line in out.splitlines())
    secret_free = (tmp_path / "serve.log").read_text()
    assert token not in secret_free


def test_the_cli_process_cannot_dump_core_or_be_dumped() -> None:
    script = (
        "import ctypes, resource; from mcp_gateway.cli import harden_process; harden_process();"
        "print(resource.getrlimit(resource.RLIMIT_CORE)); print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    core_limit, dumpable = out.stdout.splitlines()
    assert core_limit == "(0, 0)"
    assert dumpable == "0"  # PR_GET_DUMPABLE: the master key cannot be read from a dump or by ptrace
