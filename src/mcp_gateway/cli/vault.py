"""``mcp-gateway vault``.

Every change (``init``, ``put``, ``rm``, ``rotate-master``) is audited through the CLI's one audit
path (``recorded.py``): a ``vault_*`` record with ``status: requested`` is durable before the vault
or the key file changes, so a change the audit cannot record does not happen, and a second record
says how it ended. Records name the secret and key ids, never a value or a key.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import sys
from typing import Annotated, Any

import typer

from mcp_gateway.cli.common import (
    ConfigOpt,
    JsonOpt,
    fail,
    iso,
    load_cli_settings,
    master_key_env,
)
from mcp_gateway.cli.recorded import Recorder, audit_recorder
from mcp_gateway.errors import GatewayError

vault_app = typer.Typer(help="Manage encrypted secrets.", no_args_is_help=True)
SecretNameArg = Annotated[str, typer.Argument(metavar="NAME", help="the secret's name")]


def _failed(record: Recorder, exc: GatewayError, **detail: Any) -> typer.Exit:
    """Record that the change failed (best effort: the ``requested`` record already stands)."""
    with contextlib.suppress(GatewayError):
        record("error", error=str(exc), **detail)
    return fail(str(exc))


@vault_app.command("init")
def vault_init(config: ConfigOpt = None) -> None:
    """Create the master key file (0600) if it does not exist, and record its key check in the vault."""
    from mcp_gateway.app.wiring import key_file_path, open_vault
    from mcp_gateway.vault.keys import init_key_file

    settings = load_cli_settings(config)
    path = key_file_path(settings)
    if path is None:
        raise fail("vault.key_file is not configured")
    record = audit_recorder(settings, "vault_init", key_file=str(path))
    try:
        record("requested")
    except GatewayError as exc:
        raise fail(str(exc)) from None
    try:
        created = init_key_file(path)
        # The file's key alone: it must be this vault's key (a new vault records it as such).
        vault = open_vault(settings, master_key_env=None)
        keyring = vault.keyring
        if keyring is None:
            raise GatewayError(vault.seal_reason or "the vault is sealed")
    except GatewayError as exc:
        raise _failed(record, exc) from None
    try:
        record("ok", created=created, key_id=keyring.current.key_id)
    except GatewayError as exc:
        raise fail(f"key file ready, but its audit record failed: {exc}") from None
    typer.echo(f"{'created' if created else 'kept existing'} master key file {path}")


@vault_app.command("put")
def vault_put(name: SecretNameArg, config: ConfigOpt = None) -> None:
    """Store secret NAME; the value is read from stdin, or from a hidden prompt on a terminal."""
    from mcp_gateway.app.wiring import open_vault
    from mcp_gateway.vault.service import validate_name

    try:
        validate_name(name)
    except GatewayError as exc:
        raise fail(str(exc)) from None
    if sys.stdin.isatty():
        value = getpass.getpass(f"value for {name}: ")
    else:
        value = sys.stdin.read().rstrip("\r\n")
    if not value:
        raise fail("empty value")
    settings = load_cli_settings(config)
    record = audit_recorder(settings, "vault_put", secret=name)
    try:
        vault = open_vault(settings, master_key_env=master_key_env())
        replaces = any(meta["name"] == name for meta in vault.list())
        record("requested", replaces=replaces)
    except GatewayError as exc:
        raise fail(str(exc)) from None
    try:
        vault.put(name, value.encode("utf-8"))
    except GatewayError as exc:
        raise _failed(record, exc) from None
    keyring = vault.keyring
    try:
        record("ok", key_id=keyring.current.key_id if keyring is not None else None)
    except GatewayError as exc:
        raise fail(f"stored {name}, but its audit record failed: {exc}") from None
    typer.echo(f"stored {name}")


@vault_app.command("list")
def vault_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List secrets: name, key id, created and updated (UTC); never values."""
    from mcp_gateway.app.wiring import open_vault, vault_secret_names

    try:
        settings = load_cli_settings(config)
        if vault_secret_names(settings) is None:
            return  # no vault store yet: nothing to list, and none is created by looking
        secrets = open_vault(settings, master_key_env=master_key_env()).list()
    except GatewayError as exc:
        raise fail(str(exc)) from None
    for meta in secrets:
        if as_json:
            typer.echo(json.dumps(meta, sort_keys=True))
        else:
            typer.echo(
                f"{meta.get('name')}\tkey {meta.get('key_id', '-')}"
                f"\tcreated {iso(meta.get('created_at'))}\tupdated {iso(meta.get('updated_at'))}"
            )


@vault_app.command("rm")
def vault_rm(name: SecretNameArg, config: ConfigOpt = None) -> None:
    """Delete secret NAME."""
    from mcp_gateway.app.wiring import open_vault
    from mcp_gateway.vault.service import validate_name

    settings = load_cli_settings(config)
    try:
        validate_name(name)
        record = audit_recorder(settings, "vault_rm", secret=name)
        vault = open_vault(settings, master_key_env=master_key_env())
        record("requested")
    except GatewayError as exc:
        raise fail(str(exc)) from None
    try:
        deleted = vault.delete(name)
    except GatewayError as exc:
        raise _failed(record, exc) from None
    try:
        record("ok" if deleted else "none_matched")
    except GatewayError as exc:
        raise fail(
            f"{'removed' if deleted else 'found no'} {name}, but the audit record failed: {exc}"
        ) from None
    if not deleted:
        raise fail(f"no secret `{name}`")
    typer.echo(f"removed {name}")


@vault_app.command("rotate-master")
def vault_rotate_master(config: ConfigOpt = None) -> None:
    """Generate a new master key and re-wrap every data key; a running gateway keeps serving."""
    from mcp_gateway.app.wiring import key_file_path, open_vault
    from mcp_gateway.vault.crypto import Keyring, MasterKey
    from mcp_gateway.vault.keys import load_keyring, write_key_file

    settings = load_cli_settings(config)
    path = key_file_path(settings)
    if master_key_env() or path is None or not path.exists():
        raise fail("rotate-master needs the key in a key file; with MCP_GATEWAY_MASTER_KEY, re-seal by hand")
    record = audit_recorder(settings, "vault_rotate_master", key_file=str(path))
    try:
        vault = open_vault(settings, master_key_env=None)
        old = vault.keyring
        if old is None:
            raise GatewayError(vault.seal_reason or "no master key")
        new_key = MasterKey.generate()
        record("requested", old_key_id=old.current.key_id, new_key_id=new_key.key_id)
    except GatewayError as exc:
        raise fail(str(exc)) from None
    try:
        # Publish the new key first (old keys kept), so readers can open envelopes of either key mid-way.
        write_key_file(path, Keyring(current=new_key, others=(old.current, *old.others)))
        vault.reload_keyring(load_keyring(env_value=None, key_file=path))
        count = vault.rotate_master(new_key)
        write_key_file(path, Keyring(current=new_key, others=()))
    except GatewayError as exc:
        raise _failed(record, exc, new_key_id=new_key.key_id) from None
    try:
        record("ok", new_key_id=new_key.key_id, rewrapped=count)
    except GatewayError as exc:
        raise fail(f"rotated to key {new_key.key_id}, but the audit record failed: {exc}") from None
    typer.echo(f"re-wrapped {count} secret(s) under key {new_key.key_id}")


@vault_app.command("rotate-state-key")
def vault_rotate_state_key(config: ConfigOpt = None) -> None:
    """Make a new request-state-key (2026-07-28 requestState tokens); the old one keeps opening the
    tokens it sealed until they expire. Restart each gateway afterwards: a gateway reads the keys
    when it starts."""
    from mcp_gateway.app.wiring import open_vault
    from mcp_gateway.core.request_state import STATE_KEY_NAME, rotate_state_key

    settings = load_cli_settings(config)
    record = audit_recorder(settings, "vault_rotate_state_key", secret=STATE_KEY_NAME)
    try:
        vault = open_vault(settings, master_key_env=master_key_env())
        if vault.sealed:
            raise GatewayError(vault.seal_reason or "the vault is sealed (no master key)")
        record("requested")
    except GatewayError as exc:
        raise fail(str(exc)) from None
    try:
        rotate_state_key(vault)
    except GatewayError as exc:
        raise _failed(record, exc) from None
    try:
        record("ok")
    except GatewayError as exc:
        raise fail(f"rotated {STATE_KEY_NAME}, but the audit record failed: {exc}") from None
    typer.echo(
        f"rotated {STATE_KEY_NAME}: restart each gateway to seal with the new key"
        " (tokens sealed with the old one open until they expire)"
    )
