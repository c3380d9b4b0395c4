"""``mcp-gateway``: the admin CLI, a thin layer over the modules it calls.

The environment is read here and nowhere else (``MCP_GATEWAY_CONFIG``, ``MCP_GATEWAY_MASTER_KEY``).
Secret values enter only through stdin or a hidden prompt, never argv, and are never printed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from mcp_gateway.config import Settings, load_settings
from mcp_gateway.errors import GatewayError

app = typer.Typer(help="MCP Gateway: a governed MCP gateway.", no_args_is_help=True, add_completion=False)
agents_app = typer.Typer(help="Issue, list and revoke agent tokens.", no_args_is_help=True)
vault_app = typer.Typer(help="Manage encrypted secrets.", no_args_is_help=True)
audit_app = typer.Typer(help="Read and verify the audit log.", no_args_is_help=True)
policy_app = typer.Typer(help="Check and explain policy.", no_args_is_help=True)
upstreams_app = typer.Typer(help="Review and approve upstream tool definitions (pins).", no_args_is_help=True)
app.add_typer(upstreams_app, name="upstreams")
app.add_typer(agents_app, name="agents")
app.add_typer(vault_app, name="vault")
app.add_typer(audit_app, name="audit")
app.add_typer(policy_app, name="policy")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="gateway.yaml (default: $MCP_GATEWAY_CONFIG, else ./gateway.yaml if present)"
    ),
]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    if config is None:
        env = os.environ.get("MCP_GATEWAY_CONFIG")
        config = Path(env) if env else (Path("gateway.yaml") if Path("gateway.yaml").exists() else None)
    return load_settings(config, **overrides)


def _master_key_env() -> str | None:
    return os.environ.get("MCP_GATEWAY_MASTER_KEY") or None


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


_DURATION = re.compile(r"^(\d+)([smhdw])$")


def parse_expiry(value: str, now: float) -> float:
    """``30d``/``12h``/``90m``/``2w`` from now, or an ISO-8601 timestamp (UTC if no zone)."""
    match = _DURATION.match(value)
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
        return now + int(match.group(1)) * unit
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise GatewayError(f"expiry `{value}` is neither a duration like 30d nor an ISO-8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _iso(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


# ---- serve -------------------------------------------------------------------------------------


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8080)")] = None,
) -> None:
    """Run the gateway."""
    from mcp_gateway.runner import run_gateway

    settings = _settings(config)
    if host is not None or port is not None:
        server = settings.server.model_copy(
            update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
        )
        settings = settings.model_copy(update={"server": server})
    try:
        run_gateway(settings, master_key_env=_master_key_env())
    except GatewayError as exc:
        raise _fail(str(exc)) from None


@app.command()
def quickstart(
    directory: Annotated[Path, typer.Option("--dir", help="where to put the demo set-up")] = Path(
        ".mcp-gateway-quickstart"
    ),
    port: Annotated[int, typer.Option(help="port to serve on")] = 8080,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="set up and print, but do not start")] = False,
) -> None:
    """Set up a demo (key, agent, policy, upstream) and start the gateway on 127.0.0.1."""
    from mcp_gateway.quickstart import prepare, run

    try:
        demo = prepare(directory.resolve(), port=port)
        typer.echo(demo.instructions)
        if not no_serve:
            run(demo)
    except GatewayError as exc:
        raise _fail(str(exc)) from None


# ---- agents ------------------------------------------------------------------------------------


@agents_app.command("create")
def agents_create(
    name: str,
    config: ConfigOpt = None,
    expires: Annotated[str | None, typer.Option(help="30d, 12h, or an ISO-8601 time")] = None,
) -> None:
    """Issue a token for agent NAME. The token is printed once and stored only as a salted hash."""
    from mcp_gateway.wiring import open_agents

    settings = _settings(config)
    store = open_agents(settings)
    try:
        expires_at = parse_expiry(expires, time.time()) if expires else None
        record, token = store.create(name, expires_at=expires_at)
    except GatewayError as exc:
        raise _fail(str(exc)) from None
    finally:
        store.close()
    typer.echo(
        f"agent {record.name} (token id {record.token_id}, expires {_iso(record.expires_at)})", err=True
    )
    typer.echo(token)


@agents_app.command("list")
def agents_list(config: ConfigOpt = None) -> None:
    """List issued tokens (ids and dates only)."""
    from mcp_gateway.wiring import open_agents

    store = open_agents(_settings(config))
    try:
        for rec in store.list():
            state = (
                "revoked"
                if rec.revoked_at
                else ("expired" if rec.expires_at and rec.expires_at < time.time() else "live")
            )
            typer.echo(
                f"{rec.name}\t{rec.token_id}\t{state}"
                f"\tcreated {_iso(rec.created_at)}\texpires {_iso(rec.expires_at)}"
            )
    finally:
        store.close()


@agents_app.command("revoke")
def agents_revoke(name_or_token_id: str, config: ConfigOpt = None) -> None:
    """Revoke every token of an agent, or one token by its id."""
    from mcp_gateway.wiring import open_agents

    store = open_agents(_settings(config))
    try:
        count = store.revoke(name_or_token_id)
    finally:
        store.close()
    if count == 0:
        raise _fail(f"no live token matches `{name_or_token_id}`")
    typer.echo(f"revoked {count} token(s)")


# ---- vault -------------------------------------------------------------------------------------


@vault_app.command("init")
def vault_init(config: ConfigOpt = None) -> None:
    """Create the master key file (0600) if it does not exist."""
    from mcp_gateway.vault.store import init_key_file
    from mcp_gateway.wiring import key_file_path

    path = key_file_path(_settings(config))
    if path is None:
        raise _fail("vault.key_file is not configured")
    created = init_key_file(path)
    typer.echo(f"{'created' if created else 'kept existing'} master key file {path}")


@vault_app.command("put")
def vault_put(name: str, config: ConfigOpt = None) -> None:
    """Store secret NAME; the value is read from stdin, or from a hidden prompt on a terminal."""
    from mcp_gateway.wiring import open_vault

    if sys.stdin.isatty():
        value = getpass.getpass(f"value for {name}: ")
    else:
        value = sys.stdin.read().rstrip("\r\n")
    if not value:
        raise _fail("empty value")
    vault = open_vault(_settings(config), master_key_env=_master_key_env())
    try:
        vault.put(name, value.encode("utf-8"))
    except GatewayError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"stored {name}")


@vault_app.command("list")
def vault_list(config: ConfigOpt = None) -> None:
    """List secrets: names and metadata, never values."""
    from mcp_gateway.wiring import open_vault

    vault = open_vault(_settings(config), master_key_env=_master_key_env())
    for meta in vault.list():
        typer.echo("\t".join(f"{k}={v}" for k, v in meta.items()))


@vault_app.command("rm")
def vault_rm(name: str, config: ConfigOpt = None) -> None:
    """Delete secret NAME."""
    from mcp_gateway.wiring import open_vault

    vault = open_vault(_settings(config), master_key_env=_master_key_env())
    if not vault.delete(name):
        raise _fail(f"no secret `{name}`")
    typer.echo(f"removed {name}")


@vault_app.command("rotate-master")
def vault_rotate_master(config: ConfigOpt = None) -> None:
    """Generate a new master key and re-wrap every data key; a running gateway keeps serving."""
    from mcp_gateway.vault.crypto import MasterKey
    from mcp_gateway.vault.store import Keyring, load_keyring, write_key_file
    from mcp_gateway.wiring import key_file_path, open_vault

    settings = _settings(config)
    path = key_file_path(settings)
    if _master_key_env() or path is None or not path.exists():
        raise _fail("rotate-master needs the key in a key file; with MCP_GATEWAY_MASTER_KEY, re-seal by hand")
    vault = open_vault(settings, master_key_env=None)
    old = load_keyring(env_value=None, key_file=path)
    if old is None:
        raise _fail("no master key")
    new_key = MasterKey.generate()
    # Publish the new key first (old keys kept), so readers can open envelopes of either key mid-way.
    write_key_file(path, Keyring(current=new_key, others=(old.current, *old.others)))
    vault.reload_keyring(load_keyring(env_value=None, key_file=path))
    count = vault.rotate_master(new_key)
    write_key_file(path, Keyring(current=new_key, others=()))
    typer.echo(f"re-wrapped {count} secret(s) under key {new_key.key_id}")


# ---- audit -------------------------------------------------------------------------------------


def _print_records(records: list[Any], as_json: bool) -> None:
    from mcp_gateway.audit.export import record_to_dict

    for rec in records:
        if as_json:
            typer.echo(json.dumps(record_to_dict(rec), sort_keys=True))
        else:
            typer.echo(
                f"{rec.seq}\t{_iso(rec.ts)}\t{rec.kind}\t{rec.agent or '-'}\t{rec.tool or '-'}"
                f"\t{rec.decision or '-'}\t{rec.status or '-'}"
            )


@audit_app.command("tail")
def audit_tail(
    config: ConfigOpt = None,
    n: Annotated[int, typer.Option("-n", help="how many records")] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print the newest records."""
    from mcp_gateway.wiring import open_audit_sink

    sink = open_audit_sink(_settings(config))
    try:
        head = sink.head()
        after = max(0, head[0] - n) if head else 0
        _print_records(sink.records(after_seq=after), as_json)
    finally:
        sink.close()


@audit_app.command("query")
def audit_query(
    config: ConfigOpt = None,
    agent: Annotated[str | None, typer.Option()] = None,
    tool: Annotated[str | None, typer.Option()] = None,
    decision: Annotated[str | None, typer.Option(help="allow or deny")] = None,
    kind: Annotated[str | None, typer.Option(help="intent, outcome, denied, auth_failure, ...")] = None,
    since: Annotated[str | None, typer.Option(help="1h, 2d, or an ISO-8601 time")] = None,
    limit: Annotated[int, typer.Option()] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    arg_hmac: Annotated[
        str | None,
        typer.Option("--arg-hmac", help="records with a sensitive argument of this HMAC (see `audit hash`)"),
    ] = None,
) -> None:
    """Search the audit log."""
    from mcp_gateway.audit.sensitive import HMAC_HEX
    from mcp_gateway.wiring import open_audit_sink

    if arg_hmac is not None and not HMAC_HEX.fullmatch(arg_hmac := arg_hmac.lower()):
        raise _fail("--arg-hmac takes the 64 hex digits `mcp-gateway audit hash` prints")
    now = time.time()
    since_ts = None
    if since:
        try:
            point = parse_expiry(since, now)
            # A duration means "that long ago"; parse_expiry reads it forward from now.
            since_ts = now - (point - now) if _DURATION.match(since) else point
        except GatewayError as exc:
            raise _fail(str(exc)) from None
    sink = open_audit_sink(_settings(config))
    try:
        records = sink.query(
            agent=agent,
            tool=tool,
            decision=decision,
            kind=kind,
            since=since_ts,
            limit=limit,
            arg_hmac=arg_hmac,
        )
        _print_records(records, as_json)
    finally:
        sink.close()


@audit_app.command("verify")
def audit_verify(
    config: ConfigOpt = None,
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            help="trusted audit-signing public key file(s); default: the data dir's audit-signing.pub",
        ),
    ] = None,
) -> None:
    """Check the hash chain and every signed checkpoint; exits 1 and names every problem found."""
    from mcp_gateway.audit.checkpoint import verify_with_checkpoints
    from mcp_gateway.audit.checkpointer import read_mirror
    from mcp_gateway.audit.keys import read_public_keys
    from mcp_gateway.wiring import checkpoint_mirror_path, open_audit_sink, public_key_path

    settings = _settings(config)
    key_files = public_key or [public_key_path(settings)]
    try:
        keys = {}
        for path in key_files:
            if public_key and not path.is_file():
                raise GatewayError(f"public key file `{path}` does not exist")
            keys.update(read_public_keys(path))
        mirror = checkpoint_mirror_path(settings)
        mirrored = read_mirror(mirror) if mirror is not None else []
        sink = open_audit_sink(settings)
        try:
            records, stored = sink.records(), sink.checkpoints()
        finally:
            sink.close()
    except GatewayError as exc:
        raise _fail(str(exc)) from None
    if not keys and (stored or mirrored):
        where = ", ".join(f"`{path}`" for path in key_files)
        raise _fail(f"checkpoints to check but no audit-signing public key at {where} (pass --public-key)")
    report = verify_with_checkpoints(records, stored, keys, mirrored=mirrored)
    for problem in report.problems:
        typer.echo(f"seq {problem.seq}: {problem.kind}: {problem.message}")
    if not report.ok:
        raise _fail(
            f"audit chain broken: {len(report.problems)} problem(s) in {report.checked} records"
            f" and {len(set(stored) | set(mirrored))} checkpoints"
        )
    newest = report.newest
    signed = f"{report.checkpoints} signed checkpoint(s) checked"
    if newest is not None:
        signed += f", newest at seq {newest.seq}, key(s) {', '.join(report.key_ids)}"
    typer.echo(f"ok: {report.checked} records, chain intact; {signed}")
    last = records[-1].seq if records else 0
    if last > (newest.seq if newest is not None else 0):
        # Say what the checkpoints cannot vouch for (CloudTrail's caveat, too).
        covered = f"after seq {newest.seq}" if newest is not None else "at all"
        typer.echo(
            f"note: records {covered} are not covered by a checkpoint; their removal shows only"
            " against a head kept elsewhere"
        )


@audit_app.command("hash")
def audit_hash(
    value: Annotated[
        str | None, typer.Argument(help="the value; `-` or omitted: read from stdin, keeping it off argv")
    ] = None,
    config: ConfigOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="VALUE is JSON (a number, list...), not text")
    ] = False,
) -> None:
    """Print the HMAC a sensitive argument VALUE is audited as (search with `audit query --arg-hmac`)."""
    from mcp_gateway.audit.keys import load_hmac_key
    from mcp_gateway.audit.sensitive import arg_hmac
    from mcp_gateway.errors import SecretNotFound
    from mcp_gateway.wiring import open_vault

    if value is None or value == "-":
        value = getpass.getpass("value: ") if sys.stdin.isatty() else sys.stdin.read().rstrip("\r\n")
    try:
        subject: Any = json.loads(value) if as_json else value
    except json.JSONDecodeError as exc:
        raise _fail(f"VALUE is not valid JSON: {exc.msg}") from None
    vault = open_vault(_settings(config), master_key_env=_master_key_env())
    try:
        key = load_hmac_key(vault)
    except SecretNotFound:
        raise _fail("no audit hmac key yet: it is created when the gateway first starts unsealed") from None
    except GatewayError as exc:
        raise _fail(str(exc)) from None
    typer.echo(arg_hmac(key, subject))


# ---- policy ------------------------------------------------------------------------------------


@policy_app.command("check")
def policy_check(path: Annotated[Path | None, typer.Argument()] = None, config: ConfigOpt = None) -> None:
    """Validate policy files; prints every problem as file:line."""
    from mcp_gateway.errors import PolicyLoadError
    from mcp_gateway.policy.load import load_policy

    target = path if path is not None else _settings(config).policies
    try:
        policy = load_policy(target)
    except PolicyLoadError as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"ok: {target} ({len(policy.agents)} agents)")


@policy_app.command("explain")
def policy_explain(
    agent: str,
    tool: str,
    args_json: Annotated[str, typer.Argument(metavar="ARGS-JSON")] = "{}",
    config: ConfigOpt = None,
    path: Annotated[Path | None, typer.Option("--policy", help="policy file or directory")] = None,
) -> None:
    """Show the decision for AGENT calling TOOL with ARGS-JSON, and the rule that decided it."""
    from mcp_gateway.errors import PolicyLoadError
    from mcp_gateway.policy.explain import explain
    from mcp_gateway.policy.load import load_policy

    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as exc:
        raise _fail(f"ARGS-JSON is not valid JSON: {exc.msg}") from None
    if not isinstance(args, dict):
        raise _fail("ARGS-JSON must be a JSON object")
    target = path if path is not None else _settings(config).policies
    try:
        policy = load_policy(target)
    except PolicyLoadError as exc:
        raise _fail("; ".join(exc.problems)) from None
    typer.echo(explain(policy, agent, tool, args))


# ---- upstreams ---------------------------------------------------------------------------------

_PIN_STATUS = {"pinned": "pinned", "changed": "changed-blocked", "new": "new-blocked"}


@upstreams_app.command("list")
def upstreams_list(
    config: ConfigOpt = None,
    diff: Annotated[bool, typer.Option("--diff", help="show what changed in each blocked tool")] = False,
) -> None:
    """List upstream tools with their pin status (pinned, changed-blocked, new-blocked) and hashes."""
    from mcp_gateway.pinning import definition_diff
    from mcp_gateway.wiring import open_pin_store

    store = open_pin_store(_settings(config))
    try:
        pins = store.all()
    finally:
        store.close()
    if not pins:
        typer.echo("no pinned tools yet (pins are taken when the gateway first lists an upstream)", err=True)
    for pin in pins:
        typer.echo(
            f"{pin.name}\t{_PIN_STATUS[pin.status]}\tpinned {pin.hash or '-'}"
            f"\tpresented {pin.presented_hash or '-'}\tsince {_iso(pin.changed_at or pin.pinned_at)}"
        )
        if diff and pin.status != "pinned":
            typer.echo(definition_diff(pin.definition, pin.presented_definition, label=pin.name))


@upstreams_app.command("approve")
def upstreams_approve(
    name: Annotated[str, typer.Argument(metavar="UPSTREAM.TOOL")],
    config: ConfigOpt = None,
    expect_hash: Annotated[
        str | None, typer.Option("--expect-hash", help="approve only if this (prefix) is what it presents")
    ] = None,
) -> None:
    """Accept the definition UPSTREAM.TOOL presents now as its pin; a running gateway unblocks it."""
    from mcp_gateway.types import AuditEvent
    from mcp_gateway.wiring import open_audit_sink, open_pin_store

    upstream, dot, tool = name.partition(".")
    if not (upstream and dot and tool):
        raise _fail(f"`{name}` is not UPSTREAM.TOOL")
    settings = _settings(config)
    store = open_pin_store(settings)
    try:
        pin = store.get(upstream, tool)
        if pin is None:
            raise _fail(f"no pinned tool `{name}`")
        if pin.status == "pinned":
            raise _fail(f"tool `{name}` has no changed definition to approve")
        if expect_hash is not None and not pin.presented_hash.startswith(expect_hash):
            raise _fail(f"tool `{name}` presents {pin.presented_hash}, not `{expect_hash}`")
        facts = {"action": "approve_tool", "upstream": upstream, "tool": tool, "old_hash": pin.hash}
        sink = open_audit_sink(settings)
        try:
            # Audit before act. Approving the hash just audited (not "whatever is presented") keeps the
            # record true if the upstream presents yet another definition in between.
            approval = AuditEvent(
                kind="admin", tool=name, status="ok", detail={**facts, "new_hash": pin.presented_hash}
            )
            sink.append([approval])
            try:
                approved = store.approve(upstream, tool, expected_hash=pin.presented_hash)
            except GatewayError as exc:
                failure = AuditEvent(
                    kind="admin", tool=name, status="error", detail={**facts, "error": str(exc)}
                )
                sink.append([failure])
                raise
        finally:
            sink.close()
    except GatewayError as exc:
        raise _fail(str(exc)) from None
    finally:
        store.close()
    typer.echo(f"approved {name}: definition {approved.hash}; a running gateway unblocks it on its next look")


def harden_process() -> None:
    """Keep key material out of core dumps: no core files, and (Linux) not dumpable or ptrace-able
    by other processes of the same user."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_dumpable = 4
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)


def main() -> None:
    """Console-script entry point."""
    from mcp_gateway.telemetry import configure_logging

    harden_process()
    configure_logging(os.environ.get("MCP_GATEWAY_LOG_LEVEL", "INFO"))
    try:
        app()
    except GatewayError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
