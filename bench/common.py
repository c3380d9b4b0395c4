"""Shared benchmark plumbing: process groups, the upstream + gateway stack, /proc readings, results.

Every process a benchmark starts runs in its own process group and is killed (TERM, then KILL)
on the way out, including on errors and Ctrl-C. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
UPSTREAM_SCRIPT = BENCH / "upstream_echo.py"
SECRET_NAME = "bench-token"  # noqa: S105 - the vault entry's name, not a value
AGENT = "bench"
UPSTREAM_NAME = "up"
TOOL = "echo"
MAX_TEXT = 256
BENCH_MAX_IN_FLIGHT = 1024

BUILTIN_TOOL = "gateway.echo"

POLICY = f"""\
version: 1
agents:
  {AGENT}:
    grants:
      - id: bench-echo
        tool: {UPSTREAM_NAME}.{TOOL}
        args:
          text: {{max_length: {MAX_TEXT}, required: true}}
      - id: bench-builtin
        tool: {BUILTIN_TOOL}
        args:
          text: {{max_length: {MAX_TEXT}, required: true}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` every 5 ms until true; return the seconds it took. Raises on timeout."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.005)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# ---- processes ---------------------------------------------------------------------------------


class Group:
    """Child processes, each in its own process group, all killed by ``close`` (idempotent)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(
        self, cmd: list[str], *, log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)

    def close(self) -> None:
        while self.procs:
            self.kill(self.procs.pop())


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so ``finally`` blocks (process clean-up) still run."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads) from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the ")" the fields start at #3 (state); utime and stime are #14 and #15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_system_seconds(pid: int) -> float:
    """System (kernel) CPU seconds of ``pid`` (all its threads): syscalls, fsync, page faults."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


def system_busy_seconds() -> float:
    """CPU seconds every CPU has spent busy since boot (all processes; /proc/stat, idle/iowait excluded)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(max_wait: float, threshold: float = 0.25, window: float = 2.0) -> float:
    """Wait (at most ``max_wait`` s) until other work uses under ``threshold`` cores; return that load."""
    deadline = time.monotonic() + max_wait
    while True:
        before = system_busy_seconds()
        time.sleep(window)
        load = (system_busy_seconds() - before) / window
        if load < threshold or time.monotonic() >= deadline:
            return load


def proc_memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid`` in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


# ---- the stack: upstream + gateway -------------------------------------------------------------


@dataclass
class Stack:
    """A running upstream and a running gateway in front of it."""

    workdir: Path
    upstream_port: int
    gateway_port: int
    token: str
    upstream: subprocess.Popen[bytes]
    gateway: subprocess.Popen[bytes] | None
    group: Group

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}/mcp"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}/mcp"

    @property
    def config_path(self) -> Path:
        return self.workdir / "gateway.yaml"

    @property
    def gateway_log(self) -> Path:
        return self.workdir / "gateway.log"

    def start_gateway(self, timeout: float = 60.0) -> dict[str, float]:
        """Spawn ``mcp-gateway serve``; return seconds to listening (/healthz) and to ready (/readyz)."""
        if self.gateway is not None:
            raise RuntimeError("gateway already running")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
        started = time.monotonic()
        self.gateway = self.group.spawn(
            [*gateway_command(), "serve", "-c", str(self.config_path)], log=self.gateway_log, env=env
        )
        base = f"http://127.0.0.1:{self.gateway_port}"
        try:
            wait_until(lambda: self._alive() and _status(f"{base}/healthz") == 200, timeout, "/healthz")
            listening = time.monotonic() - started
            wait_until(lambda: self._alive() and _ready(f"{base}/readyz"), timeout, "/readyz")
        except (TimeoutError, RuntimeError):
            sys.stderr.write(tail(self.gateway_log))
            raise
        return {"listening_s": listening, "ready_s": time.monotonic() - started}

    def stop_gateway(self) -> None:
        if self.gateway is not None:
            self.group.kill(self.gateway)
            self.gateway = None

    def _alive(self) -> bool:
        if self.gateway is not None and self.gateway.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.gateway.returncode}:\n{tail(self.gateway_log)}")
        return True


def gateway_command() -> list[str]:
    script = Path(sys.executable).parent / "mcp-gateway"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from mcp_gateway.cli import main; main()"]


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=1.0).status_code
    except httpx.HTTPError:
        return 0


def _ready(url: str) -> bool:
    try:
        response = httpx.get(url, timeout=1.0)
    except httpx.HTTPError:
        return False
    # The upstream is `required`, so 200 means it is connected (the unauthenticated body says no more).
    return response.status_code == 200


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
    except OSError:
        return ""


def prepare_gateway_dir(
    workdir: Path, *, gateway_port: int, upstream_port: int, lean_calls: bool = True, fast_path: bool = True
) -> str:
    """Write gateway.yaml + policy, create the master key, the vault secret and the agent; return its token.

    Durable SQLite audit is the default and is kept (``audit`` is not set).
    """
    from mcp_gateway.app.wiring import key_file_path, open_agents, open_vault
    from mcp_gateway.config import load_settings
    from mcp_gateway.connectors.mcp.config import HttpUpstream
    from mcp_gateway.vault.keys import init_key_file

    (workdir / "policies").mkdir(parents=True, exist_ok=True)
    (workdir / "policies" / "bench.yaml").write_text(POLICY, encoding="utf-8")
    upstream: dict[str, Any] = {
        "transport": "http",
        "url": f"http://127.0.0.1:{upstream_port}/mcp",
        "headers": {"Authorization": f"Bearer secret://{SECRET_NAME}"},
        # Ready (/readyz 200) only once this upstream is connected: what start-to-ready measures.
        "required": True,
    }
    if "allow_private_network" in HttpUpstream.model_fields:
        # The SSRF guard refuses loopback upstreams unless told to; the bench upstream is on 127.0.0.1.
        upstream["allow_private_network"] = True
    if not lean_calls:
        upstream["lean_calls"] = False
    server: dict[str, Any] = {"host": "127.0.0.1", "port": gateway_port}
    if not fast_path:
        server["fast_path"] = False
    raw = {
        "data_dir": "data",
        "policies": "policies",
        "server": server,
        "upstreams": {UPSTREAM_NAME: upstream},
    }
    from mcp_gateway.config import Settings

    if "limits" in Settings.model_fields:
        # One agent drives every connection; the per-agent in-flight cap (default 16) would refuse
        # calls at C=32. The check still runs on every call; only its ceiling is raised.
        raw["limits"] = {"max_concurrent_calls_per_agent": BENCH_MAX_IN_FLIGHT}
    config = workdir / "gateway.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    settings = load_settings(config)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key_file = key_file_path(settings)
    if key_file is None:
        raise RuntimeError("vault.key_file must be configured")
    init_key_file(key_file)
    # A fresh value per run, long enough to be scrubbed (the redactor skips values under 6 bytes).
    open_vault(settings, master_key_env=None).put(SECRET_NAME, secrets.token_urlsafe(32).encode())
    agents = open_agents(settings)
    try:
        _, token = agents.create(AGENT)
    finally:
        agents.close()
    return token


@contextlib.contextmanager
def running_stack(
    *,
    start_gateway: bool = True,
    json_upstream: bool = False,
    lean_calls: bool = True,
    fast_path: bool = True,
) -> Iterator[Stack]:
    """A temp dir, the echo upstream, and (optionally) a started gateway; all torn down on exit."""
    group = Group()
    with tempfile.TemporaryDirectory(prefix="mcp-gateway-bench-") as tmp, terminate_as_interrupt():
        workdir = Path(tmp)
        try:
            upstream_port, gateway_port = free_port(), free_port()
            cmd = [sys.executable, str(UPSTREAM_SCRIPT), "--port", str(upstream_port)]
            if json_upstream:
                cmd.append("--json-response")
            upstream = group.spawn(cmd, log=workdir / "upstream.log")
            try:
                wait_until(lambda: upstream.poll() is None and port_open(upstream_port), 30, "the upstream")
            except TimeoutError:
                sys.stderr.write(tail(workdir / "upstream.log"))
                raise
            token = prepare_gateway_dir(
                workdir,
                gateway_port=gateway_port,
                upstream_port=upstream_port,
                lean_calls=lean_calls,
                fast_path=fast_path,
            )
            stack = Stack(workdir, upstream_port, gateway_port, token, upstream, None, group)
            if start_gateway:
                stack.start_gateway()
            yield stack
        finally:
            group.close()


# ---- facts and results -------------------------------------------------------------------------


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_facts() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("mcp", "mcp-gateway", "uvicorn", "starlette", "pydantic", "httpx", "httpx2", "anyio"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": versions,
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--", "src")),
    }


def timestamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def write_results(kind: str, data: dict[str, Any], markdown: str, stamp: str | None = None) -> Path:
    """Write ``results/<kind>-<stamp>.json`` and ``.md``; return the JSON path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = stamp or timestamp()
    path = RESULTS / f"{kind}-{stamp}.json"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(markdown, encoding="utf-8")
    return path


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (``q`` in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
