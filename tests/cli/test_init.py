"""`mcp-gateway init` as a user runs it: scaffold a folder, then run the three commands it prints,
exactly as printed, in a shell (issue a token, serve, call a tool), and call the tool again with the
MCP SDK client."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import connect, free_port, wait_until

pytestmark = pytest.mark.e2e

EXE = Path(sys.executable).parent / "mcp-gateway"
# No venv on PATH, as for a user who did not activate it: the printed commands must still run.
ENV = {**os.environ, "PATH": "/usr/bin:/bin", "MCP_GATEWAY_MASTER_KEY": ""}


def _init(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXE), "init", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=60, check=False
    )


def _printed_commands(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    return [lines[i + 1].strip() for i, line in enumerate(lines) if re.match(r"^  \d\. ", line)]


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int, list[str]]]:
    """``init my-gateway`` in an empty folder, then its second printed command (serve) running."""
    port = free_port()
    done = _init(tmp_path, "my-gateway", "--port", str(port))
    assert done.returncode == 0, done.stderr
    commands = _printed_commands(done.stdout)
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {commands[1]}"], cwd=tmp_path, env=ENV, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        yield tmp_path, port, commands
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.anyio
async def test_the_three_commands_init_prints_serve_a_tool_call_exactly_as_printed(
    served: tuple[Path, int, list[str]],
) -> None:
    folder, port, commands = served
    assert len(commands) == 3
    assert all(c.split()[0] in (str(EXE), "TOKEN=$(" + str(EXE), "curl") for c in commands), commands
    wait_until(lambda: _ready(port), timeout=60, what="the gateway init set up")
    shell = subprocess.run(
        ["bash", "-c", f'set -e\n{commands[0]}\n{commands[2]}\necho\necho "$TOKEN"'],
        cwd=folder,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shell.returncode == 0, shell.stderr
    answer, token = shell.stdout.strip().splitlines()
    result = json.loads(answer)["result"]
    assert result["isError"] is False and result["structuredContent"]["timezone"] == "UTC"
    async with connect(f"http://127.0.0.1:{port}/mcp", token) as client:
        assert {t.name for t in (await client.list_tools()).tools} == {"time.get_current_time"}
        paris = await client.call_tool("time.get_current_time", {"timezone": "Europe/Paris"})
        assert not paris.is_error and paris.structured_content is not None
        assert paris.structured_content["timezone"] == "Europe/Paris"
        refused = await client.call_tool("time.get_current_time", {"timezone": "Asia/Seoul"})
        assert refused.is_error  # the policy init wrote allows four timezones


def test_init_writes_a_private_key_a_gitignore_and_schema_lines(tmp_path: Path) -> None:
    done = _init(tmp_path, "cfg")
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "cfg"
    key = folder / "data" / "master.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "data").stat().st_mode) == 0o700
    ignored = (folder / ".gitignore").read_text().splitlines()
    assert "data/" in ignored and "*.key" in ignored
    for path, kind in ((folder / "gateway.yaml", "gateway"), (folder / "policies" / "agents.yaml", "policy")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema=file://")
        assert first.endswith(f"/mcp_gateway/schemas/{kind}.schema.json")
        assert Path(first.split("file://", 1)[1]).is_file()
    check = subprocess.run(
        [str(EXE), "config", "check", "-c", str(folder / "gateway.yaml")],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0 and "0 errors, 0 warnings" in check.stdout + check.stderr


def test_init_never_overwrites_a_file_and_writes_nothing_when_it_refuses(tmp_path: Path) -> None:
    folder = tmp_path / "cfg"
    (folder / "policies").mkdir(parents=True)
    (folder / "policies" / "agents.yaml").write_text("mine\n")
    done = _init(tmp_path, "cfg")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: `cfg/policies/agents.yaml` exists; init never overwrites (choose a new or empty folder)"
    ]
    assert (folder / "policies" / "agents.yaml").read_text() == "mine\n"
    assert sorted(p.name for p in folder.rglob("*")) == ["agents.yaml", "policies"]


def test_init_twice_refuses_the_second_time_and_keeps_the_first_key(tmp_path: Path) -> None:
    assert _init(tmp_path, "cfg").returncode == 0
    key = (tmp_path / "cfg" / "data" / "master.key").read_bytes()
    again = _init(tmp_path, "cfg")
    assert again.returncode == 1 and "init never overwrites" in again.stderr
    assert (tmp_path / "cfg" / "data" / "master.key").read_bytes() == key


def test_an_upstream_that_exits_at_start_says_why_in_readyz_and_the_log(tmp_path: Path) -> None:
    port = free_port()
    assert _init(tmp_path, "cfg", "--port", str(port)).returncode == 0
    config = tmp_path / "cfg" / "gateway.yaml"
    config.write_text(config.read_text().replace("mcp_gateway.demo.time_server", "no_such_mcp_module"))
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(EXE), "serve", "-c", str(config)], env=ENV, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        admin = subprocess.run(
            [str(EXE), "admin", "create", "me", "-c", str(config)],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        detail: dict[str, object] = {}

        def says_why() -> bool:
            nonlocal detail
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/readyz", headers={"Authorization": f"Bearer {admin}"}, timeout=1
                )
            except httpx.HTTPError:
                return False
            detail = answer.json()
            return "last stderr line" in str(detail.get("upstreams"))

        wait_until(says_why, timeout=60, what="the upstream failure in /readyz")
        assert detail["ready"] is False
        assert "No module named no_such_mcp_module" in str(detail["upstreams"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    logged = (tmp_path / "serve.log").read_text()
    assert re.search(
        r"upstream time unavailable: .*last stderr line: .*No module named no_such_mcp_module", logged
    )
