"""``mcp-gateway quickstart``: a complete demo on embedded defaults.

It writes a data dir with a master key file, a demo secret, a demo agent and its token, a demo
policy, and a ``gateway.yaml`` fronting ``mcp-server-time`` over stdio (with the demo secret injected
into its environment), then serves on 127.0.0.1.
"""

from __future__ import annotations

import secrets
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from mcp_gateway.config import load_settings
from mcp_gateway.errors import ConfigError
from mcp_gateway.runner import run_gateway
from mcp_gateway.vault.keys import init_key_file
from mcp_gateway.wiring import key_file_path, open_agents, open_vault

DEMO_AGENT = "demo-agent"

_POLICY = """\
# Demo policy: what `demo-agent` may do. Edit it while the gateway runs; it reloads on save.
version: 1
agents:
  demo-agent:
    description: the quickstart's agent
    grants:
      - id: demo-current-time
        tool: time.get_current_time
        args:
          timezone: {in: [UTC, Europe/Paris, America/New_York, Asia/Tokyo], required: true}
      - id: demo-convert-time
        tool: time.convert_time
        args:
          source_timezone: {pattern: "^[A-Za-z_]+/[A-Za-z_]+$|^UTC$"}
          target_timezone: {pattern: "^[A-Za-z_]+/[A-Za-z_]+$|^UTC$"}
          time: {pattern: "^[0-2][0-9]:[0-5][0-9]$"}
        deny:
          - id: demo-no-pyongyang
            args: {target_timezone: {in: [Asia/Pyongyang]}}
            reason: the demo forbids this target
"""


@dataclass(frozen=True)
class Demo:
    config_path: Path
    token: str
    url: str
    instructions: str


def _gateway_yaml(port: int) -> str:
    python = sys.executable
    return f"""\
# Quickstart gateway: embedded defaults (SQLite audit + vault in ./data), one stdio upstream.
data_dir: data
policies: policies
server:
  host: 127.0.0.1
  port: {port}
upstreams:
  time:
    transport: stdio
    command: {python}
    args: [-m, mcp_server_time, --local-timezone, UTC]
    env:
      # Injected from the vault at spawn time; the agent never sees it.
      DEMO_API_TOKEN: secret://demo-api-token
"""


def prepare(directory: Path, *, port: int) -> Demo:
    """Create (or refresh) the demo set-up in ``directory`` and issue a fresh demo token."""
    (directory / "policies").mkdir(parents=True, exist_ok=True)
    config_path = directory / "gateway.yaml"
    config_path.write_text(_gateway_yaml(port), encoding="utf-8")
    policy_path = directory / "policies" / "demo.yaml"
    if not policy_path.exists():
        policy_path.write_text(_POLICY, encoding="utf-8")
    settings = load_settings(config_path)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key_file = key_file_path(settings)
    if key_file is None:  # the quickstart config always names one
        raise ConfigError("the quickstart config names no key file")
    init_key_file(key_file)
    vault = open_vault(settings, master_key_env=None)
    if "demo-api-token" not in {m["name"] for m in vault.list()}:
        vault.put("demo-api-token", f"demo-{secrets.token_urlsafe(24)}".encode())
    agents = open_agents(settings)
    try:
        agents.revoke(DEMO_AGENT)
        _, token = agents.create(DEMO_AGENT)
    finally:
        agents.close()
    url = f"http://127.0.0.1:{port}/mcp"
    cfg = shlex.quote(str(config_path))
    instructions = f"""\
MCP Gateway quickstart
  config      {config_path}
  endpoint    {url}
  agent       {DEMO_AGENT}
  token       {token}
  (shown once; stored only as a salted hash. A new one is issued each time quickstart runs.)

Connect with the MCP Inspector CLI:
  npx @modelcontextprotocol/inspector --cli {url} --transport http \\
      --header "Authorization: Bearer {token}" --method tools/list
  npx @modelcontextprotocol/inspector --cli {url} --transport http \\
      --header "Authorization: Bearer {token}" --method tools/call \\
      --tool-name time.get_current_time --tool-arg timezone=Europe/Paris

Then, in another shell:
  mcp-gateway audit tail -c {cfg}        # every call, allowed or denied
  mcp-gateway audit verify -c {cfg}      # check the hash chain
  mcp-gateway policy explain -c {cfg} {DEMO_AGENT} time.get_current_time '{{"timezone": "Asia/Seoul"}}'
"""
    return Demo(config_path, token, url, instructions)


def run(demo: Demo) -> None:
    """Serve the demo gateway until interrupted."""
    run_gateway(load_settings(demo.config_path), master_key_env=None)
