"""``mcp-gateway upstreams``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mcp_gateway.cli.common import (
    ConfigOpt,
    JsonOpt,
    fail,
    iso,
    load_cli_settings,
)
from mcp_gateway.errors import GatewayError

upstreams_app = typer.Typer(
    help="Review and approve upstream definitions (pinned tools, prompts, resources).", no_args_is_help=True
)

_PIN_STATUS = {"pinned": "pinned", "changed": "changed-blocked", "new": "new-blocked"}


@upstreams_app.command("list")
def upstreams_list(
    config: ConfigOpt = None,
    diff: Annotated[bool, typer.Option("--diff", help="show what changed in each blocked item")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List upstream tools, prompts, resources and templates with their pin status (pinned,
    changed-blocked, new-blocked), hashes and pin format (v1: taken before every field was pinned)."""
    from mcp_gateway.app.wiring import open_pin_store, sqlite_store_path
    from mcp_gateway.pins.model import definition_diff

    settings = load_cli_settings(config)
    path = sqlite_store_path(settings, "pinning")
    if path is not None and not path.is_file():
        # Only reads: never create the store (a gateway that listed an upstream would have made it).
        typer.echo("no pins yet (pins are taken when the gateway first lists an upstream)", err=True)
        return
    store = open_pin_store(settings, read_only=True)
    try:
        pins = store.all()
    finally:
        store.close()
    if not pins:
        typer.echo("no pins yet (pins are taken when the gateway first lists an upstream)", err=True)
    for pin in pins:
        if as_json:
            fields = (
                "upstream",
                "tool",
                "kind",
                "hash",
                "presented_hash",
                "pinned_at",
                "changed_at",
                "version",
            )
            shown = {
                "name": pin.name,
                "status": _PIN_STATUS[pin.status],
                **{f: getattr(pin, f) for f in fields},
            }
            if diff and pin.status != "pinned":
                shown["diff"] = definition_diff(pin.definition, pin.presented_definition, label=pin.name)
            typer.echo(json.dumps(shown, sort_keys=True))
            continue
        typer.echo(
            f"{pin.name}\t{_PIN_STATUS[pin.status]}\tpinned {pin.hash or '-'}"
            f"\tpresented {pin.presented_hash or '-'}\tsince {iso(pin.changed_at or pin.pinned_at)}"
            f"\tv{pin.version}"
        )
        if diff and pin.status != "pinned":
            typer.echo(definition_diff(pin.definition, pin.presented_definition, label=pin.name))


@upstreams_app.command("approve")
def upstreams_approve(
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="UPSTREAM.TOOL, prompt:UPSTREAM.NAME, resource:UPSTREAM:URI, template:UPSTREAM:TEMPLATE",
        ),
    ],
    config: ConfigOpt = None,
    expect_hash: Annotated[
        str | None,
        typer.Option(
            "--expect-hash",
            metavar="HASH",
            help="approve only if the definition presented has this hash (prefix)",
        ),
    ] = None,
) -> None:
    """Accept the definition NAME presents now as its pin; a running gateway unblocks it."""
    from mcp_gateway.app.wiring import open_audit_writer, open_pin_store
    from mcp_gateway.cli.common import master_key_env
    from mcp_gateway.pins.model import parse_pin_name
    from mcp_gateway.types import AuditEvent

    parsed = parse_pin_name(name)
    if parsed is None:
        raise fail(
            f"`{name}` is not UPSTREAM.TOOL, prompt:UPSTREAM.NAME, resource:UPSTREAM:URI"
            " or template:UPSTREAM:TEMPLATE"
        )
    kind, upstream, tool = parsed
    settings = load_cli_settings(config)
    store = open_pin_store(settings)
    try:
        pin = store.get(upstream, tool, kind)
        if pin is None:
            raise fail(f"no pinned {kind} `{name}`")
        if pin.status == "pinned":
            raise fail(f"{kind} `{name}` has no changed definition to approve")
        if expect_hash is not None and not pin.presented_hash.startswith(expect_hash):
            raise fail(f"{kind} `{name}` presents {pin.presented_hash}, not `{expect_hash}`")
        action = "approve_tool" if kind == "tool" else f"approve_{kind}"
        facts = {"action": action, "upstream": upstream, "tool": tool, "kind": kind, "old_hash": pin.hash}
        sink = open_audit_writer(settings, master_key_env=master_key_env())
        try:
            # Audit before act. Approving the hash just audited (not "whatever is presented") keeps the
            # record true if the upstream presents yet another definition in between.
            approval = AuditEvent(
                kind="admin", tool=name, status="ok", detail={**facts, "new_hash": pin.presented_hash}
            )
            sink.append([approval])
            try:
                approved = store.approve(upstream, tool, kind=kind, expected_hash=pin.presented_hash)
            except GatewayError as exc:
                failure = AuditEvent(
                    kind="admin", tool=name, status="error", detail={**facts, "error": str(exc)}
                )
                sink.append([failure])
                raise
        finally:
            sink.close()
    except GatewayError as exc:
        raise fail(str(exc)) from None
    finally:
        store.close()
    typer.echo(f"approved {name}: definition {approved.hash}; a running gateway unblocks it on its next look")
