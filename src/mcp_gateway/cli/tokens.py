"""What ``agents`` and ``admin`` share: issuing, listing and revoking tokens of a ``SQLiteTokenStore``."""

from __future__ import annotations

import time

import typer

from mcp_gateway.agents import SQLiteTokenStore
from mcp_gateway.cli.common import fail, iso, parse_expiry
from mcp_gateway.errors import GatewayError


def issue(store: SQLiteTokenStore, name: str, expires: str | None) -> None:
    """Create a token for ``name``: the record to stderr, the token alone to stdout (printed once)."""
    try:
        expires_at = parse_expiry(expires, time.time()) if expires else None
        record, token = store.issue(name, expires_at)
    except GatewayError as exc:
        raise fail(str(exc)) from None
    finally:
        store.close()
    typer.echo(
        f"{store.holder} {record.name} (token id {record.token_id}, expires {iso(record.expires_at)})",
        err=True,
    )
    typer.echo(token)


def show(store: SQLiteTokenStore) -> None:
    """One line per token: name, id, live/expired/revoked, dates (never a secret or a hash)."""
    try:
        records = store.list()
    finally:
        store.close()
    now = time.time()
    for rec in records:
        state = (
            "revoked"
            if rec.revoked_at
            else ("expired" if rec.expires_at and rec.expires_at < now else "live")
        )
        typer.echo(
            f"{rec.name}\t{rec.token_id}\t{state}"
            f"\tcreated {iso(rec.created_at)}\texpires {iso(rec.expires_at)}"
        )


def revoke(store: SQLiteTokenStore, name_or_token_id: str, label: str) -> None:
    """Revoke a holder's live tokens or one token by id; an error when none matched."""
    try:
        count = store.revoke(name_or_token_id)
    finally:
        store.close()
    if count == 0:
        raise fail(f"no live {label}token matches `{name_or_token_id}`")
    typer.echo(f"revoked {count} {label}token(s)")
