"""Gateway replicas as processes behind HAProxy, sharing PostgreSQL and Redis: the scale-out deployment.

Each replica is ``mcp-gateway serve -c <its gateway.yaml>`` in its own process group (SIGKILL takes
its stdio upstream with it), on its own loopback address (127.0.0.2, .3, .4: Linux routes all of
127/8 to ``lo``). They share:

- PostgreSQL (``127.0.0.1:5432`` db ``test``), one fresh schema per cluster, through ``store:``:
  audit log, vault, approvals, agent and admin tokens, definition pins (``SHARED_STORE``; False
  gives the per-store sections: audit, vault and approvals on PostgreSQL, agent tokens in a shared
  SQLite file);
- Redis (``127.0.0.1:6379``), one fresh key prefix: quota counts;
- a directory: the policy files (a ConfigMap in Kubernetes) and the master key file.

Per replica: its data directory (the checkpoint mirror, the exported audit public key) and its
upstream (``leaky_upstream.py`` over stdio; only its ``echo`` is used).

HAProxy (Debian ``haproxy``) balances round-robin, sticks a request carrying ``Mcp-Session-Id`` to
the replica whose ``initialize`` answer set it (a stick table stores the response header), checks
``/readyz`` every 200 ms, and names the replica that answered in ``X-Replica``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from mcp_gateway.app.wiring import open_admins, open_agents, open_secret_store, read_keyring
from mcp_gateway.audit.keys import ensure_audit_keys
from mcp_gateway.config import load_settings
from mcp_gateway.vault.keys import init_key_file
from mcp_gateway.vault.service import Vault

FIXTURES = Path(__file__).parent.parent / "fixtures"
LEAKY = FIXTURES / "leaky_upstream.py"
EXE = Path(sys.executable).parent / "mcp-gateway"
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
REDIS_URL = "redis://127.0.0.1:6379/0"
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
MODERN = "2026-07-28"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "replicas-test", "version": "1"},
}

SHARED_STORE = True
"""True: every store through the top-level ``store:``; False: the per-store sections (audit, vault,
approvals on PostgreSQL; agent tokens in a shared SQLite file; admin tokens and pins per replica)."""


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds (a bounded wait, not a sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def replace_file(path: Path, text: str) -> None:
    """Write ``path`` in one step, as a ConfigMap update does (a hidden temp file, then a rename): a
    watcher never sees it half written."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def haproxy_path(timeout: float = 180.0) -> str:
    """The ``haproxy`` binary; it may still be being installed by apt (bounded poll)."""
    found: list[str] = []

    def present() -> bool:
        path = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
        if path:
            found.append(path)
        return bool(path)

    wait_until(present, timeout, "`haproxy` to be installed")
    return found[0]


def stores_section(dsn: str, schema: str, shared: Path) -> dict[str, Any]:
    """The gateway.yaml keys that put a replica's state where every replica sees it."""
    # Every replica needs the vault's master key; here one key file in the shared directory.
    common: dict[str, Any] = {
        "audit": {"checkpoint_seconds": 2},
        "vault": {"key_file": str(shared / "master.key")},
    }
    if SHARED_STORE:
        return {"store": {"url": dsn, "schema": schema}, **common}
    pg = {"backend": "postgres", "dsn": dsn, "schema": schema}
    return {
        "audit": {**pg, **common["audit"]},
        "vault": {"store": pg, **common["vault"]},
        "approvals": {"store": "postgres", "dsn": dsn, "schema": schema},
        "agents": {"backend": "sqlite", "path": str(shared / "agents.db")},
    }


def modern_call(
    tool: str, arguments: dict[str, Any], call_id: int = 1
) -> tuple[dict[str, Any], dict[str, str]]:
    """A self-contained 2026-07-28 ``tools/call``: body and headers."""
    body = {
        "jsonrpc": "2.0",
        "id": call_id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments, "_meta": ENVELOPE},
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
    }
    return body, headers


def message_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message of a JSON or an SSE answer (``{}`` when there is none)."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        return dict(json.loads(data[-1])) if data else {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return dict(body) if isinstance(body, dict) else {}


def echoed(message: dict[str, Any], text: str) -> bool:
    """Whether ``message`` is a successful ``echo`` result of exactly ``text``."""
    result = message.get("result") or {}
    texts = [block.get("text") for block in result.get("content", [])]
    return not result.get("isError") and texts == [text]


@dataclass
class Replica:
    name: str
    host: str
    port: int
    config: Path
    data_dir: Path
    log: Path
    admin_token: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def mcp(self) -> str:
        return f"{self.base}/mcp"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(EXE), "serve", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise AssertionError(f"replica {self.name} exited ({code}): {self.log_tail()}")
        try:
            return httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def detail(self) -> dict[str, Any]:
        """The admin detail of ``/readyz``."""
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        body: dict[str, Any] = httpx.get(f"{self.base}/readyz", headers=headers, timeout=5).json()
        return body

    def kill(self) -> None:
        """SIGKILL the replica's whole process group (its upstream too); no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM and wait (a clean shutdown: the audit log drains and signs a checkpoint)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # a stray upstream child
        return self.proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"


@dataclass
class Cluster:
    """Replicas, their load balancer and their shared state; ``close`` leaves nothing behind."""

    root: Path
    schema: str
    redis_prefix: str
    shared: Path
    policies: Path
    replicas: list[Replica]
    tokens: dict[str, str]
    lb_port: int = 0
    haproxy: subprocess.Popen[bytes] | None = None
    haproxy_log: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def lb(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}/mcp"

    def start(self, haproxy: str | None) -> None:
        """Start every replica (in parallel) and, given its binary, HAProxy in front of them."""
        started = time.monotonic()
        for replica in self.replicas:
            replica.start()
        wait_until(lambda: all(r.ready() for r in self.replicas), 60, "every replica to be ready")
        self.timings["replicas_ready_s"] = time.monotonic() - started
        if haproxy is not None:
            self.start_haproxy(haproxy)

    def start_haproxy(self, exe: str) -> None:
        self.lb_port = free_port()
        servers = "\n".join(
            f"    server {r.name} {r.host}:{r.port} check inter 200ms fall 2 rise 1" for r in self.replicas
        )
        config = f"""\
global
    maxconn 2000
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 10s
    retries 3
    option redispatch 1
    # uvicorn closes a keep-alive connection idle for 5 s, and HAProxy may keep idle server
    # connections longer: a request sent down one as it closes gets no answer, and a POST cannot be
    # retried safely. One connection per request to the replicas (loopback: cheap); after a kill a
    # new connection is refused at once, which HAProxy retries on another replica.
    option http-server-close

frontend mcp
    bind 127.0.0.1:{self.lb_port}
    default_backend gateways

backend gateways
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host 127.0.0.1
    http-check expect status 200
    # 2025-11-25 sessions live in one replica's memory: stick to the replica that issued the id.
    stick-table type string len 128 size 100k expire 1h
    stick store-response res.hdr(mcp-session-id)
    stick match req.hdr(mcp-session-id)
    http-response set-header X-Replica %s
{servers}
"""
        path = self.root / "haproxy.cfg"
        path.write_text(config, encoding="utf-8")
        check = subprocess.run([exe, "-c", "-f", str(path)], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        self.haproxy_log = self.root / "logs" / "haproxy.log"
        with self.haproxy_log.open("wb") as out:
            self.haproxy = subprocess.Popen(
                [exe, "-db", "-f", str(path)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

        def all_up() -> bool:
            assert self.haproxy is not None and self.haproxy.poll() is None, "haproxy exited"
            seen: set[str] = set()
            for _ in range(len(self.replicas) * 2):
                try:
                    response = httpx.get(f"http://127.0.0.1:{self.lb_port}/readyz", timeout=1)
                except httpx.HTTPError:
                    return False
                if response.status_code == 200:
                    seen.add(response.headers.get("x-replica", ""))
            return seen == {r.name for r in self.replicas}

        wait_until(all_up, 20, "haproxy to route to every replica")

    def haproxy_tail(self, lines: int = 40) -> str:
        """HAProxy's last log lines, only those of failed or retried requests (status >= 500,
        a termination state other than ``--``, or retries)."""
        if self.haproxy_log is None or not self.haproxy_log.exists():
            return "<no haproxy log>"
        text = self.haproxy_log.read_text(errors="replace").splitlines()
        odd = [line for line in text if " 200 " not in line or "+" in line.split('"')[0]]
        return "\n".join(odd[-lines:])

    def survivors(self) -> list[Replica]:
        return [r for r in self.replicas if r.proc is not None and r.proc.poll() is None]

    def close(self) -> None:
        """Kill every process this cluster started, drop its schema and its Redis keys."""
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.kill()
            self.haproxy.wait(timeout=10)
        for replica in self.replicas:
            replica.kill()
        drop_shared_state(self.schema, self.redis_prefix)


def drop_shared_state(schema: str, redis_prefix: str) -> None:
    import psycopg
    import redis

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{redis_prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextlib.contextmanager
def cluster(root: Path, policy: str, agents: list[str], *, count: int = 3) -> Iterator[Cluster]:
    """Set up (not start) ``count`` replicas as an admin would, and take everything down afterwards.

    The master key file and the vault's audit keys are made once before any replica starts: a
    deployment's one-time ``vault init``, so replicas starting together do not race to create them.
    """
    run = uuid.uuid4().hex[:10]
    schema, prefix = f"replicas_{run}", f"mcpgw-replicas:{run}:"
    shared, policies = root / "shared", root / "shared" / "policies"
    policies.mkdir(parents=True)
    (root / "logs").mkdir()
    (policies / "policy.yaml").write_text(policy, encoding="utf-8")
    dsn = "postgresql://postgres@127.0.0.1:5432/test"
    replicas: list[Replica] = []
    for i, host in enumerate(HOSTS[:count], start=1):
        name, port = f"r{i}", free_port(host)
        data_dir = root / name
        raw: dict[str, Any] = {
            "data_dir": str(data_dir),
            "policies": str(policies),
            "server": {
                "host": host,
                "port": port,
                "allowed_hosts": ["127.0.0.1:*", f"{host}:{port}"],
                "watch_policy": True,
            },
            **stores_section(dsn, schema, shared),
            "quotas": {"store": "redis", "redis_url": REDIS_URL, "key_prefix": prefix},
            "upstreams": {
                "leaky": {
                    "transport": "stdio",
                    "command": sys.executable,
                    "args": [str(LEAKY), "stdio"],
                }
            },
        }
        config = root / f"{name}.yaml"
        config.write_text(yaml.safe_dump(raw), encoding="utf-8")
        replicas.append(Replica(name, host, port, config, data_dir, root / "logs" / f"{name}.log"))
    made = Cluster(root, schema, prefix, shared, policies, replicas, tokens={})
    try:
        settings = load_settings(replicas[0].config)
        shared.mkdir(exist_ok=True)
        init_key_file(shared / "master.key")
        secret_store = open_secret_store(settings)
        try:
            vault = Vault(secret_store, read_keyring(settings, master_key_env=None), check_keys=True)
            assert not vault.sealed, vault.seal_reason
            ensure_audit_keys(vault)
        finally:
            close = getattr(secret_store, "close", None)  # not in the SecretStore protocol
            if callable(close):
                close()
        agent_store = open_agents(settings)
        made.tokens = {name: agent_store.create(name)[1] for name in agents}
        agent_store.close()
        for replica in replicas:
            replica.data_dir.mkdir()
            admins = open_admins(load_settings(replica.config))
            replica.admin_token = admins.create(f"ops-{replica.name}")[1]
            admins.close()
        yield made
    finally:
        made.close()
