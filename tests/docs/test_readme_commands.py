"""Every command the README's demo and "Run your own gateway" sections show, run as written in a fresh
temporary folder, with each output checked.

The commands are read from the README itself, so a README edit that breaks one fails here. What the
test changes, and only that: the port (a free one instead of 8080, so a busy 8080 cannot fail CI:
`quickstart` and `init` get `--port`, URLs follow), `scripts/setup &&` (the suite already runs in the
venv it made), the `apr_...` placeholder (the id the previous command printed), and the two commands
the README says run "in another shell" (started in the background, stopped at the end). `.venv` in
the folder links to the checkout's venv, as after `scripts/setup`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conftest import free_port, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent


def section_commands(title: str) -> list[str]:
    """The shell lines of the ```sh blocks under ``## title``: continuations joined, comments cut."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match is not None, f"README has no section `{title}`"
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", match.group(1), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = _uncomment(line).strip()
            if line:
                lines.append(line)
    return lines


def _uncomment(line: str) -> str:
    """Cut a `  # comment` that is outside quotes."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


@dataclass
class Shell:
    """Runs README lines with bash in one folder, keeping the variables they assign."""

    cwd: Path
    env: dict[str, str]
    background: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, line: str) -> str:
        assign = re.match(r"^(?:export )?([A-Z_]+)=\$\((.*)\)$", line)
        if assign:
            value = self.run(assign.group(2)).strip()
            assert value, f"`{line}` printed nothing"
            self.env[assign.group(1)] = value
            return value
        done = subprocess.run(
            ["bash", "-c", line], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, f"`{line}` exited {done.returncode}:\n{done.stdout}{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout

    def start(self, line: str, log: Path) -> None:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {line}"],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.background.append(proc)

    def stop(self) -> None:
        for proc in self.background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def _ports_free(*ports: int) -> bool:
    import socket

    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    (tmp_path / ".venv").symlink_to(VENV)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    env["HOME"] = str(tmp_path)
    runner = Shell(tmp_path, env)
    try:
        yield runner
    finally:
        runner.stop()


def test_every_readme_demo_command_runs_and_says_what_the_readme_says(shell: Shell) -> None:
    setup = section_commands("Two commands")
    quickstart = next(line for line in setup if line.endswith("mcp-gateway quickstart"))
    port = free_port()
    while not _ports_free(port + 1, port + 2):
        port = free_port()
    shell.start(f"{quickstart.removeprefix('scripts/setup && ')} --port {port}", shell.cwd / "qs.log")
    wait_until(lambda: _ready(port), timeout=90, what="the README's quickstart")

    approval = ""
    outputs: dict[str, str] = {}
    for line in section_commands("The demo"):
        if "apr_..." in line:
            assert approval, "the README uses an approval id before a command printed one"
            line = line.replace("apr_...", approval)
        out = shell.run(line)
        outputs[line] = out
        found = re.search(r'"approval_id": "(apr_[^"]+)"', out)
        approval = found.group(1) if found else approval

    def output_of(fragment: str) -> str:
        return next(out for line, out in outputs.items() if line.endswith(fragment))

    assert '"after_snapshot"' in output_of("demo fix-amount")
    assert '"check": "named(distinct_currencies)", "value": 2' in output_of("demo checks")
    assert '"state": "success"' in output_of("demo rerun")
    assert '"status": "pending_approval"' in output_of("demo patch")
    assert '"after": {"Amount": 1000000.0}' in output_of(f"--approval-id {approval}")
    assert "demo-agent" in output_of("audit tail -c .mcp-gateway-quickstart/gateway.yaml")
    verify = output_of("audit verify -c .mcp-gateway-quickstart/gateway.yaml")
    assert verify.startswith("ok:") and "chain intact" in verify

    # "Things to try": the inline `policy explain` command, as written.
    text = (ROOT / "README.md").read_text(encoding="utf-8").replace("\n", " ")
    explain = re.search(r"\(`(\.venv/bin/mcp-gateway policy explain [^`]+)`\)", text)
    assert explain is not None, "README's `policy explain` example is gone"
    refused = subprocess.run(
        ["bash", "-c", explain.group(1)], cwd=shell.cwd, env=shell.env, capture_output=True, text=True
    )
    assert "Asia/Seoul" in refused.stdout + refused.stderr and "Traceback" not in refused.stderr


def test_every_readme_walkthrough_command_runs_from_an_empty_folder(shell: Shell) -> None:
    shell.env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{shell.env.get('PATH', '')}"  # "on your PATH"
    port = free_port()
    lines = section_commands("Run your own gateway")
    assert lines[0] == "mcp-gateway init my-gateway"
    init = shell.run(f"{lines[0]} --port {port}")
    assert "my-gateway/gateway.yaml" in init
    token = shell.run(lines[1])
    assert token.startswith("mgw_")
    assert lines[2].startswith("mcp-gateway serve")
    shell.start(lines[2], shell.cwd / "serve.log")
    wait_until(lambda: _ready(port), timeout=90, what="the walkthrough's gateway")
    call = shell.run(lines[3].replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    assert '"timezone":"UTC"' in call.replace(" ", "") and '"isError":true' not in call.replace(" ", "")
    denied = shell.run(
        lines[3].replace("127.0.0.1:8080", f"127.0.0.1:{port}").replace('"UTC"', '"Asia/Seoul"')
    )
    assert "denied by policy" in denied
    assert len(lines) == 4, f"README's walkthrough gained commands this test does not run: {lines[4:]}"
    # The prose's audit command, as written: both calls are on the record.
    tail = shell.run("mcp-gateway audit tail -c my-gateway/gateway.yaml")
    assert tail.count("time.get_current_time") >= 2
