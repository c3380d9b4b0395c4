"""What ``agents`` and ``admin`` share: issuing, listing and revoking tokens of a ``TokenStore``, and
the three commands themselves (``token_commands``: one implementation, two stores).

Issuing and revoking are audited like approval decisions: a ``token_issue`` / ``token_revoke`` record
(``status: requested``) is durable before the store changes (no audit, no act), and a second record
says what happened (the new token's public id, or how many were revoked). Neither holds a secret.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Literal

import typer

from mcp_gateway.cli.common import (
    ConfigOpt,
    ExpiresOpt,
    JsonOpt,
    fail,
    iso,
    load_cli_settings,
    parse_expiry,
    read_settings,
)
from mcp_gateway.cli.recorded import Recorder, audit_recorder
from mcp_gateway.config import Settings
from mcp_gateway.errors import GatewayError
from mcp_gateway.identity.agents import TokenStore


def _audited(settings: Settings, kind: str, store: TokenStore, target: str) -> Recorder:
    """A recorder of ``kind`` events about ``target``'s tokens (raises if the audit store cannot write)."""
    return audit_recorder(settings, kind, holder_kind=store.holder, target=target)


def require_store(path: Path, what: str) -> None:
    """Fail in one line when a command that only reads would otherwise create an empty store."""
    if not path.is_file():
        raise fail(f"no {what} store at `{path}`: no token was ever issued with this config")


def issue(store: TokenStore, name: str, expires: str | None, settings: Settings) -> None:
    """Create a token for ``name``: the record to stderr, the token alone to stdout (printed once)."""
    try:
        expires_at = parse_expiry(expires, time.time()) if expires else None
        record = _audited(settings, "token_issue", store, name)
        record("requested", expires_at=expires_at)
        issued, token = store.issue(name, expires_at)
        try:
            record("ok", token_id=issued.token_id, expires_at=issued.expires_at)
        except GatewayError:
            store.revoke(issued.token_id)  # never shown, so never usable: leave no live orphan
            raise
    except GatewayError as exc:
        raise fail(str(exc)) from None
    finally:
        store.close()
    typer.echo(
        f"{store.holder} {issued.name} (token id {issued.token_id}, expires {iso(issued.expires_at)})",
        err=True,
    )
    typer.echo(token)


def show(store: TokenStore, as_json: bool = False) -> None:
    """One line per token: name, id, live/expired/revoked, dates (never a secret or a hash).

    ``as_json``: one JSON object per token, its times as Unix seconds.
    """
    try:
        records = store.list()
    except GatewayError as exc:
        raise fail(str(exc)) from None
    finally:
        store.close()
    now = time.time()
    for rec in records:
        state = (
            "revoked"
            if rec.revoked_at
            else ("expired" if rec.expires_at and rec.expires_at < now else "live")
        )
        if as_json:
            typer.echo(json.dumps({**dataclasses.asdict(rec), "state": state}, sort_keys=True))
            continue
        typer.echo(
            f"{rec.name}\t{rec.token_id}\t{state}"
            f"\tcreated {iso(rec.created_at)}\texpires {iso(rec.expires_at)}"
        )


def revoke(store: TokenStore, name_or_token_id: str, label: str, settings: Settings) -> None:
    """Revoke a holder's live tokens or one token by id; an error when none matched."""
    try:
        record = _audited(settings, "token_revoke", store, name_or_token_id)
        record("requested")
        count = store.revoke(name_or_token_id)
        record("ok" if count else "none_matched", revoked=count)
    except GatewayError as exc:
        raise fail(str(exc)) from None
    finally:
        store.close()
    if count == 0:
        raise fail(f"no live {label}token matches `{name_or_token_id}`")
    typer.echo(f"revoked {count} {label}token(s)")


def _open(store: Literal["agents", "admins"], settings: Settings, *, read_only: bool = False) -> TokenStore:
    # The same store a running gateway opens (``agents:`` / ``admins:``, or the shared ``store:``);
    # imported here so that ``--help`` does not load the gateway.
    from mcp_gateway.app.wiring import open_admins, open_agents

    opener = open_agents if store == "agents" else open_admins
    return opener(settings, read_only=read_only)


def token_commands(
    store: Literal["agents", "admins"], holder: str, name_help: str, *, help_text: str
) -> typer.Typer:
    """The ``create``, ``list`` and ``revoke`` commands of one token store.

    Args:
        store: which store (``agents`` or ``admins``).
        holder: who holds the tokens, as help and messages name them (``agent``, ``admin``).
        name_help: the help of the NAME argument.
        help_text: the command group's help.
    """
    app = typer.Typer(help=help_text, no_args_is_help=True)
    label = "" if store == "agents" else f"{holder} "
    revoke_help = f"an {holder}'s name (all its live tokens) or one token's id"

    @app.command(
        "create",
        help=f"Issue a token for {holder} NAME. It is printed once and stored only as a salted hash.",
    )
    def create(
        name: str = typer.Argument(..., metavar="NAME", help=name_help),
        config: ConfigOpt = None,
        expires: ExpiresOpt = None,
    ) -> None:
        settings = load_cli_settings(config)
        issue(_open(store, settings), name, expires, settings)

    @app.command("list", help=f"List {holder} tokens (ids and dates only).")
    def list_tokens(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
        from mcp_gateway.app.wiring import sqlite_store_path

        settings = read_settings(config)
        path = sqlite_store_path(settings, store)
        if path is not None:
            require_store(path, f"{holder} token")
        show(_open(store, settings, read_only=True), as_json)

    @app.command("revoke", help=f"Revoke every token of an {holder}, or one token by its id.")
    def revoke_tokens(
        # A default, not an annotation: the help names the holder (annotations are not evaluated here).
        name_or_token_id: str = typer.Argument(..., metavar="NAME|TOKEN_ID", help=revoke_help),
        config: ConfigOpt = None,
    ) -> None:
        settings = load_cli_settings(config)
        revoke(_open(store, settings), name_or_token_id, label, settings)

    return app
