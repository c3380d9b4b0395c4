"""Ungoverned peers for the proxy benchmark: installed into ``bench/.peers/``, never imported by the product.

Each peer fronts the SAME echo server, spawned over stdio (``upstream_echo.py --stdio``), and serves
Streamable HTTP at ``/mcp``; the proxy benchmark measures it with the same client as direct and the
gateway. Pinned versions; ``bench/.peers/`` is gitignored.

- ``mcp-proxy`` (PyPI, sparfenyuk/mcp-proxy): stdio server → SSE + Streamable HTTP, built on the
  Python SDK v1 (its own venv, ``bench/.peers/venv``). Sessions (2025-11-25 handshake) only.
- ``supergateway`` (npm): stdio → Streamable HTTP (``--outputTransport streamableHttp --stateful``:
  one child per session). Needs Node >= 20 (``bench/.peers/node``).

Run: ``python bench/peers.py install`` (also done by ``proxy.py --peers``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass

from common import BENCH, UPSTREAM_SCRIPT

PEERS_DIR = BENCH / ".peers"
VENV = PEERS_DIR / "venv"
NODE_DIR = PEERS_DIR / "node"
MCP_PROXY_VERSION = "0.13.0"
SUPERGATEWAY_VERSION = "4.0.0"
INSTALL_TIMEOUT = 600


@dataclass(frozen=True)
class Peer:
    name: str
    version: str

    def command(self, port: int) -> list[str]:
        """The command that serves Streamable HTTP at ``http://127.0.0.1:{port}/mcp``."""
        stdio = [sys.executable, str(UPSTREAM_SCRIPT), "--stdio"]
        if self.name == "mcp-proxy":
            return [
                str(VENV / "bin" / "mcp-proxy"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "WARNING",
                "--",
                *stdio,
            ]
        return [
            shutil.which("node") or "node",
            str(NODE_DIR / "node_modules" / "supergateway" / "dist" / "index.js"),
            "--stdio",
            subprocess.list2cmdline(stdio),
            "--outputTransport",
            "streamableHttp",
            "--stateful",
            "--port",
            str(port),
            "--logLevel",
            "none",
        ]


PEERS = (Peer("mcp-proxy", MCP_PROXY_VERSION), Peer("supergateway", SUPERGATEWAY_VERSION))


def _installed_version(peer: Peer) -> str | None:
    if peer.name == "mcp-proxy":
        python = VENV / "bin" / "python"
        if not python.exists():
            return None
        out = subprocess.run(
            [str(python), "-c", "from importlib.metadata import version; print(version('mcp-proxy'))"],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip() or None
    package = NODE_DIR / "node_modules" / "supergateway" / "package.json"
    if not package.exists():
        return None
    return str(json.loads(package.read_text())["version"])


def install(peer: Peer) -> str:
    """Install ``peer`` at its pinned version (no-op when present); return "" or why it failed."""
    if _installed_version(peer) == peer.version:
        return ""
    PEERS_DIR.mkdir(exist_ok=True)
    if peer.name == "mcp-proxy":
        steps = [
            [sys.executable, "-m", "venv", str(VENV)],
            [str(VENV / "bin" / "pip"), "install", "-q", f"mcp-proxy=={peer.version}"],
        ]
        cwd = PEERS_DIR
    else:
        if shutil.which("npm") is None:
            return "npm not found"
        NODE_DIR.mkdir(exist_ok=True)
        if not (NODE_DIR / "package.json").exists():
            (NODE_DIR / "package.json").write_text('{"name": "bench-peers", "private": true}\n')
        steps = [
            ["npm", "install", "--no-audit", "--no-fund", "--save-exact", f"supergateway@{peer.version}"]
        ]
        cwd = NODE_DIR
    for step in steps:
        try:
            done = subprocess.run(
                step, cwd=cwd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(step[:3])}: {exc}"
        if done.returncode != 0:
            return f"{' '.join(step[:3])} exited {done.returncode}: {done.stderr.strip()[-300:]}"
    found = _installed_version(peer)
    return "" if found == peer.version else f"installed version is {found}, wanted {peer.version}"


def main() -> int:
    failed = 0
    for peer in PEERS:
        why = install(peer)
        print(f"{peer.name} {peer.version}: {'ok' if not why else why}")
        failed += bool(why)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
