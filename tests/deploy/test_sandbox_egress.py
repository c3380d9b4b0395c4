"""An agent in a network sandbox reaches the gateway and nothing else (issue 14, item 6).

The sandbox (``netns.py``): a network namespace joined to the host by one veth pair on a private /30,
nftables inside it (out only to the gateway's address and port) and on the host (in from the sandbox
only to the gateway's address and port). The real gateway (``mcp-gateway serve``) listens on the
host end of the link; its upstream listens on the same host address, PostgreSQL (audit) and Redis
(rate limits) on 127.0.0.1. The agent's side runs with no capabilities (so no CAP_NET_ADMIN).

Every "unreachable" is paired with a control that reaches the same thing without the rules, so a
broken network cannot pass for a sandbox.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
import yaml
from netns import (
    BLOCKED,
    Sandbox,
    SandboxUnavailable,
    check_available,
    connect_outcomes,
    create,
    destroy,
    nameservers,
    remove_stale,
    tool,
)
from psycopg import sql

from conftest import LEAKY, free_port, wait_until
from mcp_gateway.app.wiring import key_file_path, open_agents, open_vault
from mcp_gateway.config import Settings
from mcp_gateway.vault.keys import init_key_file

pytestmark = pytest.mark.e2e

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
POSTGRES = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)
OUTSIDE = ("203.0.113.1", 443)  # TEST-NET-3 (RFC 5737): routed nowhere, and nothing is sent anyway
PROBE = Path(__file__).with_name("netns.py")
EXE = Path(sys.executable).parent / "mcp-gateway"
AGENT = "sandboxed-agent"
UPSTREAM_SECRET = "sk-upstream-0123456789abcdefSANDBOX"


@dataclass
class World:
    sandbox: Sandbox
    gateway_port: int
    upstream_port: int
    other_port: int
    token: str
    schema: str
    before_rules: dict[str, str]
    """What the agent's namespace reached before any rule was loaded (the control)."""

    @property
    def gateway_url(self) -> str:
        return f"http://{self.sandbox.host_ip}:{self.gateway_port}/mcp"

    def agent(self, *args: str) -> Any:
        """Run a probe of ``netns.py`` inside the sandbox as the agent; its JSON answer."""
        done = self.sandbox.run([sys.executable, "-I", str(PROBE), *args], timeout=60, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    def agent_probe(self, targets: dict[str, tuple[str, int]]) -> dict[str, str]:
        outcomes = self.agent("probe", json.dumps(list(targets.values())))
        return dict(zip(targets, outcomes, strict=True))

    def host_targets(self) -> dict[str, tuple[str, int]]:
        host = self.sandbox.host_ip
        return {
            "upstream": (host, self.upstream_port),
            "other host port": (host, self.other_port),
            "postgres at the host's link address": (host, POSTGRES[1]),
            "redis at the host's link address": (host, REDIS[1]),
        }


def _policy() -> str:
    agents = {AGENT: {"rate": ["1000/hour"], "grants": [{"id": "sandbox-echo", "tool": "leaky.echo"}]}}
    return yaml.safe_dump({"version": 1, "agents": agents}, sort_keys=False)


def _start_gateway(
    stack: ExitStack, root: Path, sandbox: Sandbox, upstream_port: int, schema: str
) -> tuple[int, str]:
    """``mcp-gateway serve`` on the host end of the link; returns (port, the agent's token)."""
    (root / "policies").mkdir(parents=True)
    (root / "policies" / "policy.yaml").write_text(_policy(), encoding="utf-8")
    raw: dict[str, Any] = {
        "data_dir": str(root / "data"),
        "policies": str(root / "policies"),
        "server": {"host": sandbox.host_ip, "watch_policy": False, "allowed_hosts": [f"{sandbox.host_ip}:*"]},
        "audit": {"backend": "postgres", "dsn": DSN, "schema": schema},
        "quotas": {"store": "redis", "redis_url": "redis://127.0.0.1:6379/0", "key_prefix": f"{schema}:"},
        "upstreams": {
            "leaky": {
                "transport": "http",
                "url": f"http://{sandbox.host_ip}:{upstream_port}/mcp",
                "headers": {"Authorization": "Bearer secret://up-token"},
                "allow_private_network": True,
                "required": True,  # ready means connected to it
            }
        },
    }
    config = root / "gateway.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    settings = Settings.model_validate(raw)
    settings.data_dir.mkdir(parents=True)
    key_file = key_file_path(settings)
    assert key_file is not None
    init_key_file(key_file)
    open_vault(settings, master_key_env=None).put("up-token", UPSTREAM_SECRET.encode())
    agents = open_agents(settings)
    token = agents.create(AGENT)[1]
    agents.close()
    # A port picked free can be taken before uvicorn binds it (uvicorn binds after the lifespan, which
    # already opens connections from this address): only that is retried, with another port.
    for _attempt in range(3):
        # The upstream may not have bound its port yet: never hand the same one out twice.
        port = _free_port_on(sandbox.host_ip, taken={upstream_port})
        log_path = root / f"gateway-{port}.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [str(EXE), "serve", "--config", str(config), "--port", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": "/usr/bin:/bin", "MCP_GATEWAY_LOG_LEVEL": "WARNING"},
            )
        stack.callback(_stop, proc)
        if _wait_ready(proc, f"http://{sandbox.host_ip}:{port}/readyz", log_path):
            return port, token
    raise AssertionError("the gateway found no free port in 3 attempts")


def _wait_ready(proc: subprocess.Popen[Any], url: str, log_path: Path) -> bool:
    """True once ``url`` answers 200; False if the process exited because its port was taken."""
    exited: list[str] = []

    def ready() -> bool:
        if proc.poll() is not None:
            exited.append(log_path.read_text(encoding="utf-8", errors="replace"))
            return True
        return _http_ok(url)

    wait_until(ready, timeout=90, what=f"the gateway (log: {log_path})")
    if not exited:
        return True
    if "address already in use" in exited[0].lower():
        return False
    raise AssertionError(f"the gateway exited: {exited[0][-3000:]}")


def _start_upstream(stack: ExitStack, root: Path, host: str) -> int:
    """The leaky test upstream over Streamable HTTP on ``host`` (where the agent could reach it)."""
    port = _free_port_on(host)
    # The fixture's own __main__ binds 127.0.0.1, which the agent could never reach anyway.
    serve = (
        "import runpy, sys; server = runpy.run_path(sys.argv[1])['server']; "
        "server.run('streamable-http', host=sys.argv[2], port=int(sys.argv[3]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", serve, str(LEAKY), host, str(port)],
        env={"LEAKY_CALL_LOG": str(root / "upstream-calls.log"), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stack.callback(_stop, proc)
    return port  # not waited for: the gateway starting meanwhile waits for it (``required: true``)


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _free_port_on(host: str, taken: set[int] | None = None) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in (taken or set()):
            return port


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _drop_schema_and_keys(schema: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    client = redis.Redis(host=REDIS[0], port=REDIS[1])
    try:
        keys = list(client.scan_iter(match=f"{schema}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    try:
        check_available()
    except SandboxUnavailable as exc:
        pytest.skip(f"no network sandbox here: {exc}")
    remove_stale()
    root = tmp_path_factory.mktemp("sandbox")
    schema = f"sandbox_{uuid.uuid4().hex[:12]}"
    with ExitStack() as stack:
        stack.callback(_drop_schema_and_keys, schema)
        sandbox = create()
        stack.callback(destroy, sandbox)
        upstream_port = _start_upstream(stack, root, sandbox.host_ip)
        gateway_port, token = _start_gateway(stack, root, sandbox, upstream_port, schema)
        other = stack.enter_context(socket.socket())
        other.bind((sandbox.host_ip, 0))
        other.listen()
        world = World(sandbox, gateway_port, upstream_port, other.getsockname()[1], token, schema, {})
        control = {"gateway": (sandbox.host_ip, gateway_port), **world.host_targets()}
        world.before_rules = world.agent_probe(control)
        sandbox.load_host_rules(gateway_port)
        sandbox.load_agent_rules(gateway_port)
        yield world


def test_the_agent_in_the_sandbox_gets_its_granted_tools_from_the_gateway(world: World) -> None:
    answer = world.agent("mcp", world.gateway_url, world.token)
    assert answer["protocol"] == "2025-11-25"  # a real initialize handshake
    assert answer["tools"] == ["leaky.echo"]  # the grant, nothing more
    assert answer["echo"] == ["from the sandbox"] and not answer["echo_error"]
    # The call went through the governed path: audited in PostgreSQL before the upstream was touched.
    with psycopg.connect(DSN) as conn:
        rows = conn.execute(
            sql.SQL("SELECT kind FROM {} WHERE agent = %s AND tool = %s ORDER BY seq").format(
                sql.Identifier(world.schema, "audit")
            ),
            (AGENT, "leaky.echo"),
        ).fetchall()
    assert [kind for (kind,) in rows][-2:] == ["intent", "outcome"]
    assert UPSTREAM_SECRET not in json.dumps(answer)


def test_the_gateway_refuses_the_sandbox_a_wrong_token_and_accepts_the_right_one(world: World) -> None:
    wrong = world.agent("initialize", world.gateway_url, "mgw_not-a-real-token")
    right = world.agent("initialize", world.gateway_url, world.token)
    assert wrong["status"] == 401 and wrong["www_authenticate"].startswith("Bearer")
    assert right["status"] == 200


def test_the_agent_reaches_nothing_but_the_gateway(world: World) -> None:
    targets = {
        **world.host_targets(),
        "postgres on the sandbox's loopback": POSTGRES,
        "redis on the sandbox's loopback": REDIS,
        "an outside address": OUTSIDE,
        "the gateway": (world.sandbox.host_ip, world.gateway_port),
    }
    drops_before = world.sandbox.agent_drops()
    reached = world.agent_probe(targets)
    dropped = world.sandbox.agent_drops() - drops_before
    assert reached == {
        "upstream": "timeout",
        "other host port": "timeout",
        "postgres at the host's link address": "timeout",
        "redis at the host's link address": "timeout",
        "postgres on the sandbox's loopback": "timeout",
        "redis on the sandbox's loopback": "timeout",
        "an outside address": "unreachable",  # no route: nothing leaves the namespace
        "the gateway": "connected",
    }
    # The six time-outs are the output rule's doing: it counted (at least) their six SYNs.
    assert dropped >= 6


def test_without_the_rules_the_same_targets_are_reachable(world: World) -> None:
    before = world.before_rules
    # From the agent's namespace before the rules: the upstream and any host port were open to it,
    # and PostgreSQL/Redis on the host's link address answered (refused: they listen on loopback).
    assert before["gateway"] == "connected"
    assert before["upstream"] == "connected"
    assert before["other host port"] == "connected"
    assert before["postgres at the host's link address"] in {"refused", "connected"}
    assert before["redis at the host's link address"] in {"refused", "connected"}
    # From the root namespace, PostgreSQL, Redis and the upstream are up right now.
    root = connect_outcomes([POSTGRES, REDIS, (world.sandbox.host_ip, world.upstream_port)])
    assert root == ["connected", "connected", "connected"]
    with psycopg.connect(DSN, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_agent_has_no_dns_and_its_only_route_is_the_link_to_the_gateway(world: World) -> None:
    resolved = world.agent("dns", "example.com")
    assert resolved["outcome"].startswith("failed") and resolved["seconds"] < 3
    for server in [s for s in nameservers() if ":" not in s]:
        assert world.agent("udp", server) in BLOCKED
    assert world.agent("udp", world.sandbox.host_ip) == "denied"  # the output rule refuses the send
    routes = world.sandbox.routes()
    assert [r["dst"] for r in routes] == [str(world.sandbox.network)]
    assert all(r.get("dst") != "default" for r in routes)


def test_the_agent_cannot_loosen_its_own_rules_or_routes(world: World) -> None:
    me = world.agent("whoami")
    assert {key: int(value, 16) for key, value in me.items() if key.startswith("Cap")} == {
        "CapInh": 0,
        "CapPrm": 0,
        "CapEff": 0,
        "CapBnd": 0,
        "CapAmb": 0,
    }
    assert me["NoNewPrivs"] == "1"
    ruleset = world.sandbox.agent_ruleset()
    attempts = [
        [tool("nft"), "delete", "table", "inet", "mgw_sandbox"],
        [tool("nft"), "flush", "ruleset"],
        [tool("ip"), "route", "add", "default", "via", world.sandbox.host_ip],
        [tool("ip"), "addr", "add", "10.0.0.9/8", "dev", "eth0"],
    ]
    for argv in attempts:
        done = world.sandbox.run(argv, check=False)
        assert done.returncode != 0, argv
        assert "Operation not permitted" in done.stderr, done.stderr
    assert world.sandbox.agent_ruleset() == ruleset
    assert [r["dst"] for r in world.sandbox.routes()] == [str(world.sandbox.network)]


def test_the_host_rules_hold_when_the_sandbox_loses_its_own(world: World) -> None:
    """An agent with root in its namespace could delete its table; the host's rules still stop it."""
    sandbox = world.sandbox
    targets = {**world.host_targets(), "the gateway": (sandbox.host_ip, world.gateway_port)}
    host_drops = sandbox.host_drops()
    sandbox.drop_agent_rules()
    try:
        assert "mgw_sandbox" not in sandbox.agent_ruleset()
        reached = world.agent_probe(targets)
    finally:
        sandbox.load_agent_rules(world.gateway_port)
    assert reached == {
        "upstream": "timeout",
        "other host port": "timeout",
        "postgres at the host's link address": "timeout",
        "redis at the host's link address": "timeout",
        "the gateway": "connected",
    }
    assert sandbox.host_drops() - host_drops >= 4
    assert "mgw_sandbox" in sandbox.agent_ruleset()


def test_teardown_leaves_no_namespace_link_or_table_behind() -> None:
    try:
        check_available(nft_wait=0)
    except SandboxUnavailable as exc:
        pytest.skip(f"no network sandbox here: {exc}")
    sandbox = create()
    try:
        sandbox.load_host_rules(free_port())
        sandbox.load_agent_rules(free_port())
    finally:
        destroy(sandbox)
    netns = subprocess.run([tool("ip"), "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run([tool("ip"), "-o", "link"], capture_output=True, text=True, check=True).stdout
    tables = subprocess.run(
        [tool("nft"), "list", "tables"], capture_output=True, text=True, check=True
    ).stdout
    assert sandbox.netns not in netns
    assert sandbox.host_if not in links
    assert sandbox.host_table not in tables
