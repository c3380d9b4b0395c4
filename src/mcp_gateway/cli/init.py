"""``mcp-gateway init``: scaffold a working config folder.

It writes ``gateway.yaml`` (one stdio upstream: the small time server shipped in the package, run by
the Python that runs the gateway, so it works on a fresh install), ``policies/agents.yaml`` (one agent,
one grant), a 0600 master key file in the data dir and a ``.gitignore`` that keeps the key and the data
dir out of git; then prints the three commands that issue a token, serve, and call a tool. Both YAML
files start with a ``yaml-language-server`` line naming the shipped JSON Schema, so editors check them.

It never overwrites: if any file it would write exists, it writes nothing and exits 1.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from mcp_gateway.cli.common import fail
from mcp_gateway.errors import GatewayError

AGENT = "my-agent"
TOOL = "time.get_current_time"

_POLICY = """\
# yaml-language-server: $schema={schema}
# Who may do what. Deny by default: an agent sees and may call only what a grant names.
# Every *.yaml file in this folder is merged; the gateway reloads them on save.
version: 1
agents:
  {agent}:
    description: the agent `mcp-gateway init` set up
    grants:
      - id: my-agent-time
        tool: {tool}
        args:
          timezone: {{in: [UTC, Europe/Paris, America/New_York, Asia/Tokyo], required: true}}
"""

_GATEWAY = """\
# yaml-language-server: $schema={schema}
# Written by `mcp-gateway init`. Every key: `mcp-gateway config schema gateway`. Check this folder
# with `mcp-gateway config check -c gateway.yaml`. Relative paths resolve against this file's folder.
data_dir: data                     # SQLite stores and the master key (data/master.key, 0600): not for git
policies: policies                 # a policy file or a folder of *.yaml

server:
  host: 127.0.0.1                  # loopback unless you mean it
  port: {port}

upstreams:
  time:                            # its tools are offered as time.<tool>
    transport: stdio
    # A small MCP server shipped in the mcp-gateway package, run by the Python that ran `init`.
    # Any MCP server works here, e.g. `command: uvx` with `args: [mcp-server-time]`.
    command: {python}
    args: [-m, mcp_gateway.demo.time_server]
    required: true                 # /readyz answers 503 until it is connected
"""

_GITIGNORE = """\
# Written by `mcp-gateway init`: the master key and the stores never go to git.
data/
*.key
*.token
"""


def _schema_ref(name: str) -> str:
    from mcp_gateway.schemas import SchemaName, schema_path

    kind: SchemaName = "gateway" if name == "gateway" else "policy"
    return schema_path(kind).resolve().as_uri()


def next_commands(config: Path, port: int, exe: str | None = None) -> list[tuple[str, str]]:
    """The walkthrough after ``init``: (what it does, the command), each runnable exactly as printed
    from the folder ``init`` ran in (a POSIX shell; the second in another shell)."""
    from mcp_gateway.demo.commands import program

    exe = exe or program()
    cfg = shlex.quote(str(config))
    body = (
        '{"jsonrpc":"2.0","id":1,"method":"tools/call",'
        f'"params":{{"name":"{TOOL}","arguments":{{"timezone":"UTC"}},'
        # A 2026-07-28 request carries its version and capabilities itself: no session, one POST.
        '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
        '"io.modelcontextprotocol/clientCapabilities":{}}}}'
    )
    call = (
        f'curl -sS http://127.0.0.1:{port}/mcp -H "Authorization: Bearer $TOKEN"'
        " -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream'"
        f" -H 'MCP-Protocol-Version: 2026-07-28' -H 'Mcp-Method: tools/call' -H 'Mcp-Name: {TOOL}'"
        f" -d '{body}'"
    )
    return [
        (
            f"issue a token for `{AGENT}` (printed once, kept in $TOKEN)",
            f"TOKEN=$({exe} agents create {AGENT} -c {cfg})",
        ),
        ("serve (in another shell, same working directory; Ctrl-C stops it)", f"{exe} serve -c {cfg}"),
        (f"call `{TOOL}` as the agent (MCP over HTTP, one POST)", call),
    ]


def scaffold(directory: Path, *, port: int, python: str | None = None) -> list[Path]:
    """Write the config folder; returns the files written.

    Raises:
        GatewayError: a file it would write exists (nothing is written), or a write fails.
    """
    from mcp_gateway.vault.keys import init_key_file

    config = directory / "gateway.yaml"
    policy = directory / "policies" / "agents.yaml"
    key = directory / "data" / "master.key"
    ignore = directory / ".gitignore"
    planned = [config, policy, key, ignore]
    existing = [path for path in planned if path.exists() or path.is_symlink()]
    if existing:
        raise GatewayError(f"`{existing[0]}` exists; init never overwrites (choose a new or empty folder)")
    texts = {
        config: _GATEWAY.format(
            schema=_schema_ref("gateway"),
            port=port,
            python=json.dumps(python or sys.executable),
        ),
        policy: _POLICY.format(schema=_schema_ref("policy"), agent=AGENT, tool=TOOL),
        ignore: _GITIGNORE,
    }
    try:
        policy.parent.mkdir(parents=True, exist_ok=True)
        key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path, text in texts.items():
            # O_EXCL: a file that appeared since the check above is still not overwritten.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
    except FileExistsError as exc:
        raise GatewayError(f"`{exc.filename}` exists; init never overwrites") from None
    except OSError as exc:
        raise GatewayError(f"cannot write `{exc.filename or directory}`: {exc.strerror}") from None
    if not init_key_file(key):
        raise GatewayError(f"`{key}` exists; init never overwrites")
    return [config, policy, key, ignore]


def init(
    directory: Annotated[Path, typer.Argument(help="the folder to create (or an empty one)")] = Path("."),
    port: Annotated[int, typer.Option(help="the port gateway.yaml serves on")] = 8080,
) -> None:
    """Scaffold a config folder (gateway.yaml, a policy, a 0600 master key, .gitignore) and print the
    next three commands: issue an agent token, serve, call a tool."""
    if not 0 < port < 65536:
        raise fail(f"port `{port}` is not between 1 and 65535")
    try:
        written = scaffold(directory, port=port)
    except GatewayError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"created {directory}/")
    for path in written:
        typer.echo(f"  {path.relative_to(directory)}")
    typer.echo("\nnext, from this same working directory:")
    for number, (what, command) in enumerate(next_commands(written[0], port), start=1):
        typer.echo(f"  {number}. {what}:\n     {command}")
