"""``mcp-gateway audit``."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mcp_gateway.audit.seal import Sealer
from mcp_gateway.cli.audit_view import Table, filters, forward, matches, newest
from mcp_gateway.cli.audit_view import follow as audit_follow
from mcp_gateway.cli.common import (
    ConfigOpt,
    JsonOpt,
    fail,
    load_cli_settings,
    master_key_env,
    read_settings,
)
from mcp_gateway.cli.ctrl_c import StopOnCtrlC
from mcp_gateway.config import Settings
from mcp_gateway.errors import GatewayError

HEX = frozenset("0123456789abcdef")
UNAUTHENTICATED = 3
"""``audit verify``'s exit code when it found no problem but could not authenticate every record."""

audit_app = typer.Typer(help="Read and verify the audit log.", no_args_is_help=True)


def _read_sink(config: Path | None) -> Any:
    """The audit store opened read-only (never created), or a one-line failure."""
    from mcp_gateway.app.wiring import open_audit_sink

    settings = read_settings(config)
    try:
        return open_audit_sink(settings, read_only=True)
    except GatewayError as exc:
        raise fail(f"{exc} (from the config's `audit` setting; is this the right config?)") from None


AgentOpt = Annotated[str | None, typer.Option(metavar="AGENT", help="records of this agent")]
ToolOpt = Annotated[
    str | None, typer.Option(metavar="GLOB", help="records of this tool; a glob: 'data.*', '*.rerun_job'")
]
DecisionOpt = Annotated[str | None, typer.Option(metavar="DECISION", help="allow, deny or pending")]
StatusOpt = Annotated[
    str | None, typer.Option(metavar="STATUS", help="ok, denied, not_granted, upstream_error, ... (exact)")
]
KindOpt = Annotated[
    str | None, typer.Option(metavar="KIND", help="intent, outcome, denied, auth_failure, admin, alert, ...")
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        metavar="WHEN", help="records from then on: 30m, 1h, 2d (ago), today, yesterday, or an ISO-8601 time"
    ),
]
UntilOpt = Annotated[
    str | None, typer.Option(metavar="WHEN", help="records before then (the same forms as --since)")
]


@audit_app.command("tail")
def audit_tail(
    config: ConfigOpt = None,
    n: Annotated[int, typer.Option("-n", metavar="N", min=0, help="how many records")] = 20,
    agent: AgentOpt = None,
    tool: ToolOpt = None,
    decision: DecisionOpt = None,
    status: StatusOpt = None,
    kind: KindOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing new records until Ctrl-C")
    ] = False,
    interval: Annotated[
        float, typer.Option(metavar="SECONDS", min=0.05, help="--follow: how often to look")
    ] = 1.0,
    timeout: Annotated[
        float | None, typer.Option(metavar="SECONDS", min=0, help="--follow: stop after this long")
    ] = None,
    max_records: Annotated[
        int | None, typer.Option(metavar="N", min=1, help="--follow: stop after N new records")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the newest records (under a header), and with --follow the new ones as they come."""
    found = filters(
        agent=agent, tool=tool, decision=decision, status=status, kind=kind, since=since, until=until
    )
    # Following ends with Ctrl-C, a normal end (exit 0) wherever it lands, opening the store included:
    # from here on it is a flag the follow checks, never an exception that could be lost (ctrl_c.py).
    with StopOnCtrlC(enabled=follow) as ctrl_c:
        sink = _read_sink(config)
        try:
            head = sink.head()
            table = Table(as_json)
            if not ctrl_c.pressed:
                table.print(newest(sink, found, n))
            if follow and not ctrl_c.pressed:
                audit_follow(
                    sink,
                    found,
                    head[0] if head else 0,
                    table.print,
                    interval=interval,
                    timeout=timeout,
                    max_records=max_records,
                    wait=ctrl_c.wait,
                )
        except GatewayError as exc:
            raise fail(str(exc)) from None
        finally:
            sink.close()


@audit_app.command("query")
def audit_query(
    config: ConfigOpt = None,
    agent: AgentOpt = None,
    tool: ToolOpt = None,
    decision: DecisionOpt = None,
    status: StatusOpt = None,
    kind: KindOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option(metavar="N", min=1, help="at most this many records")] = 100,
    as_json: JsonOpt = False,
    arg_hmac: Annotated[
        str | None,
        typer.Option(
            "--arg-hmac",
            metavar="HMAC",
            help="records with a sensitive argument of this HMAC (see `audit hash`)",
        ),
    ] = None,
) -> None:
    """Search the audit log (the newest LIMIT matching records, oldest first)."""
    from mcp_gateway.audit.sensitive import HMAC_HEX

    if arg_hmac is not None and not HMAC_HEX.fullmatch(arg_hmac := arg_hmac.lower()):
        raise fail("--arg-hmac takes the 64 hex digits `mcp-gateway audit hash` prints")
    found = filters(
        agent=agent, tool=tool, decision=decision, status=status, kind=kind, since=since, until=until
    )
    sink = _read_sink(config)
    try:
        if arg_hmac is None:
            records = newest(sink, found, limit)
        else:
            records = [
                rec
                for rec in sink.query(
                    agent=agent,
                    decision=decision,
                    kind=kind,
                    since=found.since,
                    limit=100_000,
                    arg_hmac=arg_hmac,
                )
                if matches(rec, found)
            ][-limit:]
        Table(as_json).print(records)
    except GatewayError as exc:
        raise fail(str(exc)) from None
    finally:
        sink.close()


@audit_app.command("export")
def audit_export(
    config: ConfigOpt = None,
    fmt: Annotated[
        str, typer.Option("--format", metavar="FORMAT", help="ocsf, jsonl (the records themselves) or csv")
    ] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="write here (default: stdout)")
    ] = None,
    agent: AgentOpt = None,
    tool: ToolOpt = None,
    decision: DecisionOpt = None,
    status: StatusOpt = None,
    kind: KindOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
) -> None:
    """Export matching records, oldest first, for a SIEM or a spreadsheet (secrets redacted again;
    CSV cells that would run as a formula are prefixed with ')."""
    from mcp_gateway.connectors.siem.formats import FORMATS, export_lines

    if fmt not in FORMATS:
        raise fail(f"--format `{fmt}` is not a format: use one of {', '.join(FORMATS)}", code=2)
    found = filters(
        agent=agent, tool=tool, decision=decision, status=status, kind=kind, since=since, until=until
    )
    redactor = _export_redactor(config)
    sink = _read_sink(config)
    try:
        lines = export_lines(forward(sink, found), fmt, redactor)  # type: ignore[arg-type]
        if output is None:
            for line in lines:
                typer.echo(line, nl=False)
        else:
            with output.open("w", encoding="utf-8", newline="") as handle:
                handle.writelines(lines)
    except GatewayError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot write `{output}`: {exc.strerror}") from None
    finally:
        sink.close()


def _export_redactor(config: Path | None) -> Any:
    """A redactor of every vault value, when the vault opens; else none (the records are redacted
    when written; this second pass catches values stored since)."""
    from mcp_gateway.app.wiring import open_vault
    from mcp_gateway.config import SQLiteStore
    from mcp_gateway.redact import EMPTY, Redactor

    settings = read_settings(config)
    store = settings.vault.store
    if isinstance(store, SQLiteStore) and not settings.data_path(store.path).is_file():
        return EMPTY
    try:
        vault = open_vault(settings, master_key_env=master_key_env())
        if vault.sealed:
            return EMPTY
        return Redactor.from_secrets(vault.resolve_all().values())
    except GatewayError:
        return EMPTY


def _sealer(settings: Settings) -> tuple[Sealer | None, str]:
    """The seal key's checker, or None and why not (never creates the vault)."""
    from mcp_gateway.app.wiring import open_vault
    from mcp_gateway.audit.keys import load_seal_key
    from mcp_gateway.config import SQLiteStore
    from mcp_gateway.errors import SecretNotFound

    store = settings.vault.store
    if isinstance(store, SQLiteStore) and not settings.data_path(store.path).is_file():
        return None, "there is no vault"
    try:
        vault = open_vault(settings, master_key_env=master_key_env())
        if vault.sealed:
            return None, "the vault is sealed (set MCP_GATEWAY_MASTER_KEY or keep the key file)"
        return Sealer(load_seal_key(vault)), ""
    except SecretNotFound:
        return None, "the vault holds no seal key yet"
    except GatewayError as exc:
        return None, str(exc)


def _parse_head(value: str) -> tuple[int, str]:
    seq, _, head_hash = value.partition(":")
    if not seq.isdigit() or int(seq) < 1 or len(head_hash) != 64 or not all(c in HEX for c in head_hash):
        raise fail(f"--expect-head takes SEQ:HASH (a record's seq and its 64 hex digit hash), not `{value}`")
    return int(seq), head_hash


@audit_app.command("verify")
def audit_verify(
    config: ConfigOpt = None,
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            metavar="FILE",
            help="trusted audit-signing public key file(s); default: the data dir's audit-signing.pub",
        ),
    ] = None,
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            metavar="SEQ:HASH",
            help="a record's seq and hash kept elsewhere; the log must hold it",
        ),
    ] = None,
) -> None:
    """Check the chain, every signed checkpoint and every record's MAC; exits 1 naming every problem.

    Exits 0 when every record is authenticated, 1 naming each problem found, and 3 when it found
    none but some records could be authenticated by nothing it holds (no seal key, and newer than
    every signed checkpoint).

    Records are authenticated by their seals (MACs with the vault's key, checked when the vault can
    be opened) and by signed checkpoints (public key only). The log must reach the newest checkpoint
    of the store and of the mirror file, and the head given with --expect-head.
    """
    from mcp_gateway.app.wiring import checkpoint_mirror_path, public_key_path
    from mcp_gateway.audit.assess import assess
    from mcp_gateway.audit.checkpointer import read_mirror
    from mcp_gateway.audit.inherit import SealedSink
    from mcp_gateway.audit.keys import read_public_keys

    head = _parse_head(expect_head) if expect_head is not None else None
    settings = read_settings(config)
    key_files = public_key or [public_key_path(settings)]
    try:
        keys = {}
        for path in key_files:
            if public_key and not path.is_file():
                raise GatewayError(f"public key file `{path}` does not exist")
            keys.update(read_public_keys(path))
        mirror = checkpoint_mirror_path(settings)
        mirrored = read_mirror(mirror) if mirror is not None else []
    except GatewayError as exc:
        raise fail(str(exc)) from None
    sink = _read_sink(config)
    try:
        records, stored = sink.records(), sink.checkpoints()
        seals = sink.seals() if isinstance(sink, SealedSink) else []
    except GatewayError as exc:
        raise fail(str(exc)) from None
    finally:
        sink.close()
    if not keys and (stored or mirrored):
        where = ", ".join(f"`{path}`" for path in key_files)
        raise fail(f"checkpoints to check but no audit-signing public key at {where} (pass --public-key)")
    sealer, why_not = _sealer(settings)
    found = assess(records, stored, keys, mirrored=mirrored, seals=seals, sealer=sealer, expected_head=head)
    report, sealed, problems = found.checkpoints, found.seals, found.problems
    for problem in problems:
        typer.echo(f"seq {problem.seq}: {problem.kind}: {problem.message}")
    if sealed is None:
        typer.echo(f"macs: not checked: {why_not}")
    if problems:
        raise fail(
            f"audit log fails verification: {len(problems)} problem(s) in {report.checked} records"
            f" and {len(set(stored) | set(mirrored))} checkpoints"
        )
    newest = report.newest
    signed = f"{report.checkpoints} signed checkpoint(s) checked"
    if newest is not None:
        signed += f", newest at seq {newest.seq}, key(s) {', '.join(report.key_ids)}"
    typer.echo(f"ok: {report.checked} records, chain intact; {signed}")
    covered = newest.seq if newest is not None else 0
    last = records[-1].seq if records else 0
    unauthenticated = sealed is None and last > covered
    if sealed is not None:
        typer.echo(f"macs: all {sealed.authenticated} records authenticated (seals, or a signed checkpoint)")
    if head is None and last > covered:
        typer.echo(
            f"note: removing records after seq {covered} shows only against a head kept elsewhere"
            f" (--expect-head {last}:{records[-1].hash})"
        )
    if unauthenticated:
        # Say what the checkpoints cannot vouch for (CloudTrail's caveat, too), and exit apart.
        first = covered + 1
        raise fail(
            f"records {first} to {last} are not authenticated: no signed checkpoint covers them and"
            " their seals need the vault's key",
            code=UNAUTHENTICATED,
        )


@audit_app.command("hash")
def audit_hash(
    value: Annotated[
        str | None,
        typer.Argument(
            metavar="VALUE", help="the value; `-` or omitted: read from stdin, keeping it off argv"
        ),
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
