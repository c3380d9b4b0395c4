"""Expected failures end in one `error: ...` line on stderr and a non-zero exit, never a traceback.

Most tests run the real console script (``.venv/bin/mcp-gateway``) as a subprocess, as a user runs it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
import typer
import yaml
from typer.testing import CliRunner

from conftest import free_port, wait_until
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.cli import app
from mcp_gateway.cli.common import set_debug
from mcp_gateway.cli.failures import run_cli
from mcp_gateway.types import AuditEvent

pytestmark = pytest.mark.e2e

CLI = str(Path(sys.executable).with_name("mcp-gateway"))


def cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the console script with no MCP_GATEWAY_* variable of the outer environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env={**clean, **(env or {})}
    )


def entry(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """The console script's code path in-process (``main`` without the process start: faster)."""
    capsys.readouterr()
    code = run_cli(app, list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def one_error_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The single ``error: ...`` line a failed command printed (asserting there is exactly that)."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "policies").mkdir()
    path = tmp_path / "gateway.yaml"
    path.write_text("data_dir: data\npolicies: policies\n")
    return path


def test_a_demo_command_against_a_stopped_gateway_says_so_in_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({"data_dir": "data", "server": {"port": port}}))
    (tmp_path / "demo-agent.token").write_text("mgw_abc_def\n")
    line = one_error_line(cli("demo", "checks", "--dir", str(tmp_path)))
    assert f"cannot reach the quickstart gateway at http://127.0.0.1:{port}/mcp" in line


def test_a_demo_command_without_a_quickstart_folder_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_error_line(
        entry(capsys, "demo", "revert", "--audit-id", "x", "--dir", str(tmp_path / "nowhere"))
    )
    assert "no quickstart set-up" in line and "mcp-gateway quickstart" in line


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port some other process holds open (listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_serve_on_a_busy_port_fails_fast_in_one_line_before_any_upstream_starts(
    tmp_path: Path, held_port: int
) -> None:
    marker = tmp_path / "upstream-started"
    spawn = f"open({str(marker)!r}, 'w').close(); import time; time.sleep(30)"
    settings = {
        "data_dir": "data",
        "server": {"port": held_port},
        "upstreams": {"marker": {"transport": "stdio", "command": sys.executable, "args": ["-c", spawn]}},
    }
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(settings))
    started = time.monotonic()
    baseline = cli("--version")  # what starting the CLI alone costs on this machine now
    startup = time.monotonic() - started
    assert baseline.returncode == 0
    started = time.monotonic()
    result = cli("serve", "-c", str(tmp_path / "gateway.yaml"))
    elapsed = time.monotonic() - started
    line = one_error_line(result)
    assert f"cannot listen on 127.0.0.1:{held_port}" in line and "in use" in line
    assert elapsed - startup < 3.0, (elapsed, startup)  # before the fix: upstreams first, ~5 s later
    assert not marker.exists()  # no upstream was spawned
    assert not (tmp_path / "data").exists()  # no store was opened either


def test_serve_on_a_free_port_serves_on_the_socket_it_checked(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({"data_dir": "data", "server": {"port": port}}))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    proc = subprocess.Popen(
        [CLI, "serve", "-c", str(tmp_path / "gateway.yaml")],
        env=clean,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def healthy() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout=60, what="the gateway to answer /healthz")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()


def test_a_read_only_command_without_a_config_fails_in_one_line_and_creates_nothing(tmp_path: Path) -> None:
    line = one_error_line(cli("audit", "tail", cwd=tmp_path))
    assert "no gateway config found" in line and str(tmp_path / "gateway.yaml") in line
    assert list(tmp_path.iterdir()) == []


def test_a_config_that_cannot_be_read_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    line = one_error_line(entry(capsys, "audit", "tail", "-c", str(folder)))
    assert f"cannot read config `{folder}`" in line


def test_a_file_that_is_no_gateway_config_fails_without_echoing_its_lines(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    lines = [f"user{i}:$6$salt{i}$HASHVALUE{i}xyz:19000:0:99999:7:::" for i in range(9)]
    shadow.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["audit", "tail", "-c", str(shadow)])
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1
    assert "Extra inputs are not permitted" in result.stderr and "and 4 more" in result.stderr
    assert "HASHVALUE" not in result.stderr and "salt" not in result.stderr


def test_an_unreachable_database_fails_in_one_line_without_its_password(tmp_path: Path) -> None:
    dsn = f"postgresql://gw:pw-not-shown-3@127.0.0.1:{free_port()}/test?connect_timeout=3"
    settings = {"data_dir": "data", "audit": {"backend": "postgres", "dsn": dsn}}
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(settings))
    line = one_error_line(cli("audit", "tail", "-c", str(tmp_path / "gateway.yaml")))
    assert "audit" in line and "pw-not-shown-3" not in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["audit", "tail", "--bogus"], "No such option: --bogus; see `mcp-gateway audit tail --help`"),
        (["audit", "query", "--limit", "many"], "'--limit'"),
    ],
    ids=["unknown option", "bad value"],
)
def test_bad_arguments_fail_in_one_line_with_exit_2(args: list[str], expected: str) -> None:
    line = one_error_line(cli(*args), code=2)
    assert expected in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["quota", "reset"], "Missing argument 'AGENT'; see `mcp-gateway quota reset --help`"),
        (["no-such-command"], "No such command 'no-such-command'; see `mcp-gateway --help`"),
        (["--debug", "audit", "tail", "-n", "x"], "Invalid value for '-n'"),
    ],
    ids=["missing argument", "unknown command", "bad value with --debug"],
)
def test_more_bad_arguments_fail_in_one_line_with_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    try:
        line = one_error_line(entry(capsys, *args), code=2)
    finally:
        set_debug(False)
    assert expected in line


@pytest.fixture
def audited(config: Path) -> Path:
    """A config whose audit log holds a record from 3 days ago and one from now."""
    (config.parent / "data").mkdir()
    clock = {"now": time.time() - 3 * 86400}
    sink = SQLiteAuditSink(config.parent / "data" / "audit.db", clock=lambda: clock["now"])
    try:
        sink.append([AuditEvent(kind="intent", agent="old-agent", tool="t")])
        clock["now"] = time.time()
        sink.append([AuditEvent(kind="intent", agent="new-agent", tool="t")])
    finally:
        sink.close()
    return config


@pytest.mark.parametrize("since", ["1h", "yesterday"])
def test_audit_query_since_takes_a_duration_or_yesterday(audited: Path, since: str) -> None:
    result = cli("audit", "query", "--since", since, "-c", str(audited))
    assert result.returncode == 0, result.stderr
    assert "new-agent" in result.stdout and "old-agent" not in result.stdout


@pytest.mark.parametrize(
    ("since", "old_shown"),
    [("30m", False), ("2d", False), ("today", False), ("4d", True), ("2000-01-01", True)],
)
def test_audit_query_since_takes_durations_days_and_iso_times(
    audited: Path, since: str, old_shown: bool
) -> None:
    result = CliRunner().invoke(app, ["audit", "query", "--since", since, "-c", str(audited)])
    assert result.exit_code == 0, result.stderr
    assert "new-agent" in result.stdout and ("old-agent" in result.stdout) == old_shown


def test_a_bad_since_names_the_option_not_expiry(audited: Path) -> None:
    line = one_error_line(cli("audit", "query", "--since", "last week", "-c", str(audited)))
    assert "--since `last week`" in line and "expiry" not in line


@pytest.mark.parametrize(
    ("since", "why"), [("5 parsecs", "is not a duration"), ("2999-01-01", "is in the future")]
)
def test_a_since_that_is_no_past_time_is_refused(audited: Path, since: str, why: str) -> None:
    result = CliRunner().invoke(app, ["audit", "query", "--since", since, "-c", str(audited)])
    assert result.exit_code == 1 and result.stderr.startswith(f"error: --since `{since}` {why}")
    assert "expiry" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_bad_expires_names_the_option(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = one_error_line(entry(capsys, "agents", "create", "a", "--expires", "soon", "-c", str(config)))
    assert "--expires `soon`" in line


def test_version_prints_the_package_version() -> None:
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"mcp-gateway {version('mcp-gateway')}"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback_before_the_error_line(tmp_path: Path, how: str) -> None:
    port = free_port()
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({"data_dir": "data", "server": {"port": port}}))
    (tmp_path / "demo-agent.token").write_text("mgw_abc_def\n")
    args = ["demo", "checks", "--dir", str(tmp_path)]
    result = cli("--debug", *args) if how == "flag" else cli(*args, env={"MCP_GATEWAY_DEBUG": "1"})
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ConnectError" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: cannot reach the quickstart gateway")


def test_help_shows_no_type_after_a_flag() -> None:
    result = cli("audit", "query", "--help")
    assert result.returncode == 0
    flags = [line for line in result.stdout.splitlines() if line.strip().startswith("--json")]
    assert flags and all("<bool>" not in line for line in flags)
    assert "<bool>" not in CliRunner().invoke(app, ["--help"]).stdout


# ---- the entry point's mapping, in-process (an unexpected exception cannot be provoked from outside) ----


def _raising(exc: Exception) -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)

    @app.command()
    def boom() -> None:
        raise exc

    return app


def test_an_unexpected_exception_is_one_line_with_a_debug_hint(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(_raising(RuntimeError("bad state\nsecond line")), [])
    err = capsys.readouterr().err
    assert code == 1
    assert err == "error: unexpected RuntimeError: bad state; run with --debug for details\n"


def test_an_unexpected_exception_masks_url_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    run_cli(_raising(ValueError("cannot use redis://user:hunter2@db:6379/0")), [])
    err = capsys.readouterr().err
    assert "hunter2" not in err and "redis://***@db:6379/0" in err


def test_with_debug_an_unexpected_exception_prints_its_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    set_debug(True)
    try:
        code = run_cli(_raising(RuntimeError("bad state")), [])
    finally:
        set_debug(False)
    err = capsys.readouterr().err
    assert (
        code == 1
        and "Traceback" in err
        and err.splitlines()[-1] == "error: unexpected RuntimeError: bad state"
    )


@pytest.mark.parametrize("zone", ["UTC", "America/Los_Angeles", "Asia/Kolkata"])
def test_today_and_yesterday_are_utc_midnights_whatever_the_machines_time_zone(
    zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time as clock

    from mcp_gateway.cli.common import parse_since

    monkeypatch.setenv("TZ", zone)
    clock.tzset()
    try:
        now = 1_764_900_000.0  # 2025-12-05 02:00 UTC: still 2025-12-04 in Los Angeles
        assert parse_since("today", now) == 1_764_892_800.0  # 2025-12-05 00:00 UTC
        assert parse_since("Yesterday", now) == 1_764_806_400.0
    finally:
        monkeypatch.delenv("TZ")
        clock.tzset()
