"""Attack on durability: the gateway process is killed with SIGKILL, at random moments, under load.

The gateway runs as users run it (``mcp-gateway serve -c gateway.yaml``, its own process group, a
stdio upstream as its child). Six workers send 2026-07-28 ``tools/call`` requests, each with an
argument value no other call uses; after a random number of answers the whole process group gets
SIGKILL. After every kill, each call whose result the client received has its intent record (holding
that unique value) and an outcome record under the intent's call id, no upstream execution lacks an
intent, and the chain verifies; then the gateway restarts on the same data and the load resumes.

Rounds: ``MCP_GATEWAY_SOAK_KILLS`` (default 6, for CI). The local soak is 50:
``MCP_GATEWAY_SOAK_KILLS=50 .venv/bin/pytest tests/security/test_attack_crash_durability.py``.
A failure prints the seed; ``MCP_GATEWAY_SOAK_SEED`` replays the same kill points.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml

from conftest import LEAKY, free_port, wait_until
from mcp_gateway.app.wiring import key_file_path, open_agents
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.audit.verify import verify
from mcp_gateway.config import load_settings
from mcp_gateway.vault.keys import init_key_file

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

KILLS = int(os.environ.get("MCP_GATEWAY_SOAK_KILLS", "6"))
WORKERS = 6
EXE = Path(sys.executable).parent / "mcp-gateway"

POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - id: a-echo
        tool: leaky.echo
"""


@dataclass
class Deployment:
    config: Path
    url: str
    token: str
    audit_db: Path
    call_log: Path
    logs: Path


def deploy(root: Path) -> Deployment:
    """A gateway.yaml, policy, master key and agent token, as an admin would set them up."""
    (root / "policies").mkdir(parents=True)
    (root / "policies" / "policy.yaml").write_text(POLICY, encoding="utf-8")
    port = free_port()
    call_log = root / "upstream-calls.log"
    raw = {
        "data_dir": "data",
        "policies": "policies",
        "server": {"host": "127.0.0.1", "port": port, "watch_policy": False},
        "upstreams": {
            "leaky": {
                "transport": "stdio",
                "command": sys.executable,
                "args": [str(LEAKY), "stdio"],
                "env": {"LEAKY_CALL_LOG": str(call_log)},
            }
        },
    }
    config = root / "gateway.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    settings = load_settings(config)
    settings.data_dir.mkdir(parents=True)
    key_file = key_file_path(settings)
    assert key_file is not None
    init_key_file(key_file)
    agents = open_agents(settings)
    _, token = agents.create("agent-a")
    agents.close()
    audit_db = settings.data_path(settings.audit.path)
    (root / "logs").mkdir()
    return Deployment(config, f"http://127.0.0.1:{port}/mcp", token, audit_db, call_log, root / "logs")


def start(dep: Deployment, round_no: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "MCP_GATEWAY_MASTER_KEY"}
    with (dep.logs / f"serve-{round_no}.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(EXE), "serve", "-c", str(dep.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: SIGKILL takes the upstream child too
        )

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited with {proc.returncode}: see {dep.logs}")
        try:
            return httpx.get(dep.url.removesuffix("/mcp") + "/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=30, what="the gateway process")
    return proc


def kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def request(text: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A self-contained 2026-07-28 ``tools/call`` of ``leaky.echo``."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": "leaky.echo",
            "arguments": {"text": text},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "soak", "version": "1"},
            },
        },
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "leaky.echo",
    }
    return body, headers


def result_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message in a JSON or an SSE answer."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        return dict(json.loads(data[-1]))
    return dict(response.json())


@dataclass
class Load:
    """What the client saw in one round."""

    received: list[str] = field(default_factory=list)  # unique values whose results came back
    unexpected: list[str] = field(default_factory=list)


async def load_until_killed(
    dep: Deployment, proc: subprocess.Popen[bytes], round_no: int, kill_after: int
) -> Load:
    load = Load()
    killed = anyio.Event()

    async def worker(w: int, http: httpx.AsyncClient) -> None:
        i = 0
        while not killed.is_set():
            text = f"r{round_no}-w{w}-{i}"
            i += 1
            body, headers = request(text)
            try:
                response = await http.post(dep.url, json=body, headers=headers)
                message = result_of(response)
            except (httpx.HTTPError, ValueError, IndexError):
                if killed.is_set():
                    return  # the connection died with the process, or the answer was cut short
                raise
            result = message.get("result", {})
            texts = [block.get("text") for block in result.get("content", [])]
            if response.status_code != 200 or result.get("isError") or texts != [text]:
                load.unexpected.append(f"{text}: {response.status_code} {message}")
                continue
            load.received.append(text)
            if len(load.received) == kill_after:
                kill(proc)
                killed.set()

    auth = {"Authorization": f"Bearer {dep.token}", "Content-Type": "application/json"}
    with anyio.fail_after(60):
        async with (
            httpx.AsyncClient(headers=auth, timeout=httpx.Timeout(10)) as http,
            anyio.create_task_group() as tg,
        ):
            for w in range(WORKERS):
                tg.start_soon(worker, w, http)
    return load


def check_durability(dep: Deployment, received: list[str], why: str) -> int:
    """Every received result has intent + outcome; no upstream act lacks an intent; the chain holds."""
    with SQLiteAuditSink(dep.audit_db) as sink:
        records = sink.records()
    report = verify(records)
    assert report.ok, f"{why}: chain broken: {report.problems[:5]}"
    intents = {r.args.get("text"): r.call_id for r in records if r.kind == "intent"}
    outcomes = {r.call_id: r.status for r in records if r.kind == "outcome"}
    lost = [text for text in received if text not in intents or intents[text] not in outcomes]
    assert lost == [], f"{why}: {len(lost)} answered calls without intent+outcome: {lost[:5]}"
    assert all(outcomes[intents[text]] == "ok" for text in received), why
    executed = dep.call_log.read_text().splitlines().count("echo") if dep.call_log.exists() else 0
    # Audit before act: the upstream never ran a call whose intent was not already durable.
    assert executed <= len(intents), f"{why}: {executed} upstream calls, {len(intents)} intents"
    return len(records)


async def test_every_answered_call_survives_sigkill_with_intent_and_outcome_and_the_chain_verifies(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("MCP_GATEWAY_SOAK_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)  # noqa: S311 - seeded kill points, so a failure can be replayed
    dep = deploy(tmp_path)
    received: list[str] = []
    records = 0
    for round_no in range(KILLS):
        why = f"seed {seed}, round {round_no}"
        proc = start(dep, round_no)
        try:
            load = await load_until_killed(dep, proc, round_no, kill_after=rng.randint(5, 60))
        finally:
            kill(proc)
        assert proc.returncode == -signal.SIGKILL, why
        assert load.unexpected == [], f"{why}: {load.unexpected[:3]}"
        received += load.received
        grown = check_durability(dep, received, why)
        assert grown > records, why
        records = grown
    # The restarted gateway chains onto the crashed log and serves; the admin CLI agrees it is intact.
    proc = start(dep, KILLS)
    try:
        body, headers = request("after-the-last-kill")
        headers |= {"Authorization": f"Bearer {dep.token}", "Content-Type": "application/json"}
        response = httpx.post(dep.url, json=body, headers=headers, timeout=10)
        assert result_of(response)["result"]["content"][0]["text"] == "after-the-last-kill"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    check_durability(dep, [*received, "after-the-last-kill"], f"seed {seed}, after restart")
    verified = subprocess.run(
        [str(EXE), "audit", "verify", "-c", str(dep.config)], capture_output=True, text=True, check=False
    )
    assert verified.returncode == 0 and "chain intact" in verified.stdout, verified.stdout + verified.stderr
