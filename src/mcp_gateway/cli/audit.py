"""``mcp-gateway audit``."""

from __future__ import annotations

import getpass
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from mcp_gateway.cli.common import (
    DURATION,
    ConfigOpt,
    fail,
    iso,
    load_cli_settings,
    master_key_env,
    parse_expiry,
)
from mcp_gateway.errors import GatewayError

audit_app = typer.Typer(help="Read and verify the audit log.", no_args_is_help=True)


def _print_records(records: list[Any], as_json: bool) -> None:
    from mcp_gateway.audit.export import record_to_dict

    for rec in records:
        if as_json:
            typer.echo(json.dumps(record_to_dict(rec), sort_keys=True))
        else:
            typer.echo(
                f"{rec.seq}\t{iso(rec.ts)}\t{rec.kind}\t{rec.agent or '-'}\t{rec.tool or '-'}"
                f"\t{rec.decision or '-'}\t{rec.status or '-'}"
            )


@audit_app.command("tail")
def audit_tail(
    config: ConfigOpt = None,
    n: Annotated[int, typer.Option("-n", help="how many records")] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print the newest records."""
    from mcp_gateway.app.wiring import open_audit_sink

    sink = open_audit_sink(load_cli_settings(config))
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
    from mcp_gateway.app.wiring import open_audit_sink
    from mcp_gateway.audit.sensitive import HMAC_HEX

    if arg_hmac is not None and not HMAC_HEX.fullmatch(arg_hmac := arg_hmac.lower()):
        raise fail("--arg-hmac takes the 64 hex digits `mcp-gateway audit hash` prints")
    now = time.time()
    since_ts = None
    if since:
        try:
            point = parse_expiry(since, now)
            # A duration means "that long ago"; parse_expiry reads it forward from now.
            since_ts = now - (point - now) if DURATION.match(since) else point
        except GatewayError as exc:
            raise fail(str(exc)) from None
    sink = open_audit_sink(load_cli_settings(config))
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
    from mcp_gateway.app.wiring import checkpoint_mirror_path, open_audit_sink, public_key_path
    from mcp_gateway.audit.checkpoint import verify_with_checkpoints
    from mcp_gateway.audit.checkpointer import read_mirror
    from mcp_gateway.audit.keys import read_public_keys

    settings = load_cli_settings(config)
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
        raise fail(str(exc)) from None
    if not keys and (stored or mirrored):
        where = ", ".join(f"`{path}`" for path in key_files)
        raise fail(f"checkpoints to check but no audit-signing public key at {where} (pass --public-key)")
    report = verify_with_checkpoints(records, stored, keys, mirrored=mirrored)
    for problem in report.problems:
        typer.echo(f"seq {problem.seq}: {problem.kind}: {problem.message}")
    if not report.ok:
        raise fail(
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
        which = (
            f"records after seq {newest.seq} are not covered by a signed checkpoint"
            if newest is not None
            else "the records are not covered by any signed checkpoint yet"
        )
        typer.echo(f"note: {which}; their removal shows only against a head kept elsewhere")


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
    from mcp_gateway.app.wiring import open_vault
    from mcp_gateway.audit.keys import load_hmac_key
    from mcp_gateway.audit.sensitive import arg_hmac
    from mcp_gateway.errors import SecretNotFound

    if value is None or value == "-":
        value = getpass.getpass("value: ") if sys.stdin.isatty() else sys.stdin.read().rstrip("\r\n")
    try:
        subject: Any = json.loads(value) if as_json else value
    except json.JSONDecodeError as exc:
        raise fail(f"VALUE is not valid JSON: {exc.msg}") from None
    vault = open_vault(load_cli_settings(config), master_key_env=master_key_env())
    try:
        key = load_hmac_key(vault)
    except SecretNotFound:
        raise fail("no audit hmac key yet: it is created when the gateway first starts unsealed") from None
    except GatewayError as exc:
        raise fail(str(exc)) from None
    typer.echo(arg_hmac(key, subject))
