"""Re-running `mcp-gateway quickstart`: while one serves the folder it says so in one line and changes
nothing (the live token keeps working); a taken port is refused before anything is set up; after a
stop the folder is reused with the same token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conftest import connect, free_port, wait_until

pytestmark = pytest.mark.e2e

EXE = Path(sys.executable).parent / "mcp-gateway"
ENV = {**os.environ, "MCP_GATEWAY_MASTER_KEY": ""}


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _three_free_ports() -> int:
    port = free_port()
    while not all(_free(p) for p in (port, port + 1, port + 2)):
        port = free_port()
    return port


def _quickstart(directory: Path, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXE), "quickstart", "--dir", str(directory), "--port", str(port), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
        check=False,
    )


@dataclass
class Running:
    directory: Path
    port: int
    token: str
    log: Path


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    base = tmp_path_factory.mktemp("qs-rerun")
    directory, port, log_path = base / "demo", _three_free_ports(), base / "quickstart.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [str(EXE), "quickstart", "--dir", str(directory), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=ENV,
    )

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=90, what="the first quickstart")
        token = (directory / "demo-agent.token").read_text().strip()
        yield Running(directory, port, token, log_path)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


async def _current_time(port: int, token: str) -> bool:
    async with connect(f"http://127.0.0.1:{port}/mcp", token) as client:
        result = await client.call_tool("time.get_current_time", {"timezone": "UTC"})
        return not result.is_error


@pytest.mark.anyio
async def test_a_second_quickstart_on_a_running_folder_says_so_and_the_first_token_still_works(
    running: Running,
) -> None:
    again = _quickstart(running.directory, running.port)
    assert again.returncode == 1
    assert again.stdout == ""  # no banner, no token
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: a quickstart is already running in `{running.directory}`"
    )
    assert f"http://127.0.0.1:{running.port}/mcp" in lines[0]
    assert (running.directory / "demo-agent.token").read_text().strip() == running.token
    assert await _current_time(running.port, running.token)


def test_a_quickstart_in_another_folder_on_a_taken_port_is_refused_before_setting_anything_up(
    running: Running, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    again = _quickstart(other, running.port)
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.strip().splitlines() == [
        f"error: port {running.port} (for the gateway; the quickstart uses --port {running.port} and the"
        " next two) is in use: is a gateway or another quickstart running? choose another --port"
    ]
    assert not other.exists()


def test_the_first_quickstart_reported_progress_for_its_slow_steps(running: Running) -> None:
    log = running.log.read_text()
    for step in ("seeding the demo lake", "demo lake ready", "starting the Salesforce emulator", "ready ("):
        assert f"quickstart: {step}" in log


def test_the_banner_names_a_program_that_runs_as_printed(running: Running) -> None:
    log = running.log.read_text()
    line = next(line for line in log.splitlines() if "demo checks --dir" in line)
    program = line.split()[0]
    assert program == "mcp-gateway" or Path(program) == EXE


@pytest.mark.anyio
async def test_a_rerun_after_a_stop_reuses_the_folder_and_its_token(tmp_path: Path) -> None:
    directory, port = tmp_path / "demo", _three_free_ports()
    first = _quickstart(directory, port, "--no-serve")
    assert first.returncode == 0, first.stderr
    token = (directory / "demo-agent.token").read_text().strip()
    policy = directory / "policies" / "demo.yaml"
    policy.write_text(policy.read_text() + "# my edit\n")
    second = _quickstart(directory, port, "--no-serve")
    assert second.returncode == 0, second.stderr
    assert f"token       {token}" in second.stdout and "previous run's token, still valid" in second.stdout
    assert policy.read_text().endswith("# my edit\n")
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(EXE), "serve", "-c", str(directory / "gateway.yaml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=ENV,
    )
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=90, what="the re-run quickstart's gateway")
        assert await _current_time(port, token)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
