"""``mcp-gateway quickstart``: a complete demo on embedded defaults.

It writes a data dir with a master key file, the demo secrets, a demo agent and its token, a demo
policy and a ``gateway.yaml`` with:

- the package's small time server (``mcp_gateway.demo.time_server``) over stdio, a demo secret
  injected into its environment;
- an Apache Iceberg lake (SQL catalog on SQLite in the data dir) seeded with the three data stories;
- a Salesforce org on ``--port`` + 1 and a dbt Cloud account on ``--port`` + 2, both served by the
  package's emulators (contract-faithful test doubles: no real dbt Cloud or Salesforce is reachable).

With ``--postgres DSN`` it also sets up the self-healing loop (``demo heal``) on that PostgreSQL and a
local dbt Core: a ``pg`` warehouse, a ``dbt_core`` orchestrator, a job and a quality monitor
(``quickstart_pg.py``).

``run`` starts the two emulators in threads and serves the gateway. ``mcp-gateway demo ...``
(``demo.py``) then plays an agent through the stories with the token written to ``demo-agent.token``.

Re-running is safe. While a quickstart serves a folder it holds a lock on ``quickstart.lock`` there
(released by the kernel when the process ends, however it ends), so a second ``prepare`` on that
folder says so in one line and changes nothing: the live token stays valid and no new one is printed.
The three ports are checked before anything is changed. After a stopped quickstart the folder is
reused: the key, the secrets, an edited policy and the still-valid token are kept; the config is
rewritten (the port may change) and the demo tables are reset.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shlex
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from mcp_gateway.app.runner import run_gateway
from mcp_gateway.app.wiring import key_file_path, open_agents, open_vault
from mcp_gateway.config import Settings, load_settings
from mcp_gateway.demo.commands import program
from mcp_gateway.demo.quickstart_files import DBT_ACCOUNT, DBT_JOB, SF_CLIENT_ID, demo_policy, gateway_yaml
from mcp_gateway.demo.quickstart_pg import PgDemo, config_sections, reset, store_secrets, write_policy
from mcp_gateway.errors import ConfigError, GatewayError
from mcp_gateway.vault.keys import init_key_file
from mcp_gateway.vault.service import Vault

DEMO_AGENT = "demo-agent"
TOKEN_FILE = "demo-agent.token"  # noqa: S105 - a file name, not a password
SECRETS = ("demo-api-token", "sf-sandbox-secret", "dbt-token")
LOCK_FILE = "quickstart.lock"
READY_WAIT_SECONDS = 120.0
"""How long ``run`` reports progress while waiting for ``/readyz``, before saying where to look."""

Progress = Callable[[str], None]


def say(line: str) -> None:
    """The default progress sink: one line to stderr (stdout carries the banner)."""
    sys.stderr.write(f"quickstart: {line}\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class Demo:
    config_path: Path
    token: str
    url: str
    instructions: str
    lock: IO[str] | None = field(default=None, repr=False, compare=False)
    """The open ``quickstart.lock``, locked while this process may serve the folder."""
    progress: Progress = field(default=say, repr=False, compare=False)

    def release(self) -> None:
        """Give up the folder's lock (the process's end does so too)."""
        if self.lock is not None:
            self.lock.close()


def _hold_lock(directory: Path, port: int) -> IO[str]:
    """Lock ``quickstart.lock`` in ``directory`` for this process, recording its pid and port.

    Raises:
        GatewayError: another process holds it (one line: which pid, which endpoint, where the token is).
    """
    path = directory / LOCK_FILE
    fh = open(path, "a+", encoding="utf-8")  # held open (and locked) for the process's life
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        try:
            held = json.loads(fh.read() or "{}")
        except ValueError:
            held = {}
        fh.close()
        where = f"pid {held.get('pid', '?')}, http://127.0.0.1:{held.get('port', '?')}/mcp"
        raise GatewayError(
            f"a quickstart is already running in `{directory}` ({where}); its token is in"
            f" `{directory / TOKEN_FILE}`; stop it (Ctrl-C) to start another here"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps({"pid": os.getpid(), "port": port}) + "\n")
    fh.flush()
    return fh


def _check_ports(port: int) -> None:
    """The gateway's port and the emulators' (the next two) must be free, before anything changes.

    Raises:
        GatewayError: one of them is taken, naming which and what the quickstart wanted it for.
    """
    for number, role in (
        (port, "the gateway"),
        (port + 1, "the Salesforce emulator"),
        (port + 2, "the dbt Cloud emulator"),
    ):
        with socket.socket() as sock:
            try:
                # Bind, not connect: a port held by an outgoing connection cannot be listened on either.
                sock.bind(("127.0.0.1", number))
            except OSError:
                raise GatewayError(
                    f"port {number} (for {role}; the quickstart uses --port {port} and the next two)"
                    " is in use: is a gateway or another quickstart running? choose another --port"
                ) from None


def prepare(
    directory: Path,
    *,
    port: int,
    progress: Progress = say,
    check_ports: bool = True,
    exe: str | None = None,
    postgres: PgDemo | None = None,
) -> Demo:
    """Create (or reuse) the demo set-up in ``directory``: demo data reset, the token kept if still valid.

    Args:
        directory: the demo folder (created if missing).
        port: the gateway's port; the emulators take the next two.
        progress: told one line per slow step.
        check_ports: refuse at once if a port is taken (before anything in the folder changes).
        exe: how the banner names ``mcp-gateway`` (default: as the running program is reachable).
        postgres: also set up the self-healing loop on this PostgreSQL and dbt (``quickstart_pg``).

    Raises:
        GatewayError: a quickstart already serves ``directory``, a port is taken, or a step failed.
    """
    fresh = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    lock = _hold_lock(directory, port)
    try:
        if check_ports:
            _check_ports(port)
    except BaseException:
        lock.close()
        if fresh:  # refused before anything was set up: leave no folder behind
            (directory / LOCK_FILE).unlink(missing_ok=True)
            directory.rmdir()
        raise
    try:
        return _prepare(directory, port, progress, lock, exe or program(), postgres)
    except BaseException:
        lock.close()
        raise


def _prepare(
    directory: Path, port: int, progress: Progress, lock: IO[str], exe: str, postgres: PgDemo | None
) -> Demo:
    (directory / "policies").mkdir(parents=True, exist_ok=True)
    config_path = directory / "gateway.yaml"
    heal = config_sections(postgres) if postgres is not None else None
    config_path.write_text(gateway_yaml(directory, port, heal), encoding="utf-8")
    policy_path = directory / "policies" / "demo.yaml"
    if not policy_path.exists():
        policy_path.write_text(demo_policy(), encoding="utf-8")
    write_policy(directory / "policies", postgres)
    settings = load_settings(config_path)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key_file = key_file_path(settings)
    if key_file is None:  # the quickstart config always names one
        raise ConfigError("the quickstart config names no key file")
    init_key_file(key_file)
    vault = open_vault(settings, master_key_env=None)
    existing = {m["name"] for m in vault.list()}
    for name in SECRETS:
        if name not in existing:
            vault.put(name, f"demo-{secrets.token_urlsafe(24)}".encode())
    if postgres is not None:
        store_secrets(vault, postgres)
        progress(f"resetting the PostgreSQL demo schemas `{postgres.schema}` and `{postgres.analytics}*` ...")
        reset(postgres)
    started = time.monotonic()
    progress("seeding the demo lake (three Iceberg tables; a re-run resets them) ...")
    _seed_lake(settings, vault)
    progress(f"demo lake ready ({time.monotonic() - started:.1f}s)")
    token_path = directory / TOKEN_FILE
    token, reused = _demo_token(settings, token_path)
    url = f"http://127.0.0.1:{port}/mcp"
    text = _instructions(
        config_path, directory, url, token, exe=exe, reused=reused, heal=postgres is not None
    )
    return Demo(config_path, token, url, text, lock=lock, progress=progress)


def _demo_token(settings: Settings, token_path: Path) -> tuple[str, bool]:
    """The token in ``token_path`` if the store still accepts it for the demo agent, else a new one
    (the demo agent's other tokens revoked) written there 0600; and whether it was reused."""
    agents = open_agents(settings)
    try:
        with contextlib.suppress(OSError, GatewayError):
            token = token_path.read_text(encoding="utf-8").strip()
            if agents.verify(token).agent == DEMO_AGENT:
                return token, True
        agents.revoke(DEMO_AGENT)
        _, token = agents.create(DEMO_AGENT)
    finally:
        agents.close()
    token_path.touch(mode=0o600)
    os.chmod(token_path, 0o600)
    token_path.write_text(token + "\n", encoding="utf-8")
    return token, False


def _seed_lake(settings: Settings, vault: Vault) -> None:
    from mcp_gateway.demo.lake import seed_demo

    (settings.data_dir / "iceberg" / "warehouse").mkdir(parents=True, exist_ok=True)
    for warehouse in settings.warehouses.values():
        seed_demo(warehouse, vault.resolve)


def _instructions(
    config_path: Path,
    directory: Path,
    url: str,
    token: str,
    *,
    exe: str = "mcp-gateway",
    reused: bool = False,
    heal: bool = False,
) -> str:
    cfg = shlex.quote(str(config_path))
    qs = shlex.quote(str(directory))
    kept = "the previous run's token, still valid; " if reused else ""
    mcp_gateway = exe
    loop = "the self-healing loop on PostgreSQL + dbt Core (you approve)"
    heal_line = f"  {mcp_gateway} demo heal --dir {qs}        # {loop}\n" if heal else ""
    return f"""\
MCP Gateway quickstart
  config      {config_path}
  endpoint    {url}
  agent       {DEMO_AGENT}
  token       {token}
  ({kept}also in {directory / TOKEN_FILE} (0600); stored only as a salted hash)

Play the agent, in another shell (each step is a governed, audited MCP call):
  {mcp_gateway} demo fix-amount --dir {qs}   # story 2: branch, fix, verify, switch in, roll back
  {mcp_gateway} demo checks --dir {qs}       # stories 1 and 3: an empty table, mixed currencies
  {mcp_gateway} demo rerun --dir {qs}        # a failed dbt Cloud job: context, rerun, status
  {mcp_gateway} demo patch --dir {qs}        # a 10x Salesforce change waits for a human
  {mcp_gateway} approvals list -c {cfg}
  export MCP_GATEWAY_ADMIN_TOKEN=$({mcp_gateway} admin create you -c {cfg})   # once: your admin token
  {mcp_gateway} approvals approve -c {cfg} APPROVAL_ID     # decided as the token's holder, audited
  {mcp_gateway} demo patch --dir {qs} --approval-id APPROVAL_ID
  {mcp_gateway} demo revert --dir {qs} --audit-id AUDIT_ID      # put the before-image back
{heal_line}
Or connect any MCP client, e.g. the MCP Inspector CLI:
  npx @modelcontextprotocol/inspector --cli {url} --transport http \\
      --header "Authorization: Bearer {token}" --method tools/list

The security console (audit, approvals, chain health, ...), for people:
  {url.removesuffix("/mcp")}/console   log in with the admin token above (`admin create you`)

And look at the record:
  {mcp_gateway} audit tail -c {cfg}        # every call, allowed or denied
  {mcp_gateway} audit verify -c {cfg}      # check the hash chain and signed checkpoints
  {mcp_gateway} policy explain -c {cfg} {DEMO_AGENT} time.get_current_time '{{"timezone": "Asia/Seoul"}}'
"""


def start_emulators(settings: Settings) -> list[object]:
    """Serve the dbt Cloud and Salesforce emulators the demo config points at (daemon threads)."""
    from mcp_gateway.connectors.orchestrators.config import DbtCloudSettings
    from mcp_gateway.demo.emulators import serve_in_thread
    from mcp_gateway.demo.emulators.dbt_cloud import DbtCloudEmulator, DbtJob
    from mcp_gateway.demo.emulators.salesforce import create_app
    from mcp_gateway.demo.emulators.salesforce_state import EmulatedOrg

    vault = open_vault(settings, master_key_env=None)
    dbt_token = vault.resolve("dbt-token").reveal_text()
    sf_secret = vault.resolve("sf-sandbox-secret").reveal_text()
    org = settings.salesforce["sandbox"]
    dbt = settings.orchestrators["dbt"]
    assert isinstance(dbt, DbtCloudSettings)  # noqa: S101 - the quickstart config writes a dbt Cloud entry
    sf_port = int(str(org.login_url).rstrip("/").rsplit(":", 1)[1])
    dbt_port = int(str(dbt.url).rstrip("/").rsplit(":", 1)[1])
    jobs = {DBT_JOB: DbtJob(name="nightly_revenue", fail_first_run=True)}
    dbt_app = DbtCloudEmulator(account_id=DBT_ACCOUNT, token=dbt_token, jobs=jobs).app
    sf_app = create_app(EmulatedOrg(client_id=SF_CLIENT_ID, client_secret=sf_secret))
    return [serve_in_thread(sf_app, sf_port), serve_in_thread(dbt_app, dbt_port)]


def _watch_ready(url: str, progress: Progress, stop: threading.Event) -> None:
    """Report when ``/readyz`` answers 200 (a progress line every 10 s meanwhile; bounded)."""
    ready_url = url.removesuffix("/mcp") + "/readyz"
    started = time.monotonic()
    next_note = started + 10
    while not stop.is_set():
        waited = time.monotonic() - started
        if waited > READY_WAIT_SECONDS:
            progress(f"not ready after {waited:.0f}s: see the log above and {ready_url}")
            return
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(ready_url, timeout=2) as answer:  # noqa: S310 - our own loopback URL
                if answer.status == 200:
                    progress(f"ready ({waited:.1f}s): {url}")
                    return
        if time.monotonic() >= next_note:
            progress(f"still waiting for the gateway and its upstream ({waited:.0f}s) ...")
            next_note += 10
        stop.wait(0.2)


def run(demo: Demo) -> None:
    """Start the emulators and serve the demo gateway until interrupted (the folder stays locked)."""
    settings = load_settings(demo.config_path)
    port = settings.server.port
    demo.progress(
        f"starting the Salesforce emulator (port {port + 1}) and the dbt Cloud emulator (port {port + 2}) ..."
    )
    try:
        start_emulators(settings)
    except RuntimeError as exc:
        raise GatewayError(f"{exc}: is the port taken? choose another --port") from None
    demo.progress(f"starting the gateway on 127.0.0.1:{port} and its upstream `time` ...")
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_ready, args=(demo.url, demo.progress, stop), daemon=True)
    watcher.start()
    try:
        run_gateway(settings, master_key_env=None)
    finally:
        stop.set()
        demo.release()
