"""``mcp-gateway vault``."""

from __future__ import annotations

import getpass
import sys

import typer

from mcp_gateway.cli.common import (
    ConfigOpt,
    fail,
    load_cli_settings,
    master_key_env,
)
from mcp_gateway.errors import GatewayError

vault_app = typer.Typer(help="Manage encrypted secrets.", no_args_is_help=True)


@vault_app.command("init")
def vault_init(config: ConfigOpt = None) -> None:
    """Create the master key file (0600) if it does not exist."""
    from mcp_gateway.app.wiring import key_file_path
    from mcp_gateway.vault.keys import init_key_file

    path = key_file_path(load_cli_settings(config))
    if path is None:
        raise fail("vault.key_file is not configured")
    created = init_key_file(path)
    typer.echo(f"{'created' if created else 'kept existing'} master key file {path}")


@vault_app.command("put")
def vault_put(name: str, config: ConfigOpt = None) -> None:
    """Store secret NAME; the value is read from stdin, or from a hidden prompt on a terminal."""
    from mcp_gateway.app.wiring import open_vault

    if sys.stdin.isatty():
        value = getpass.getpass(f"value for {name}: ")
    else:
        value = sys.stdin.read().rstrip("\r\n")
    if not value:
        raise fail("empty value")
    vault = open_vault(load_cli_settings(config), master_key_env=master_key_env())
    try:
        vault.put(name, value.encode("utf-8"))
    except GatewayError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"stored {name}")


@vault_app.command("list")
def vault_list(config: ConfigOpt = None) -> None:
    """List secrets: names and metadata, never values."""
    from mcp_gateway.app.wiring import open_vault

    vault = open_vault(load_cli_settings(config), master_key_env=master_key_env())
    for meta in vault.list():
        typer.echo("\t".join(f"{k}={v}" for k, v in meta.items()))


@vault_app.command("rm")
def vault_rm(name: str, config: ConfigOpt = None) -> None:
    """Delete secret NAME."""
    from mcp_gateway.app.wiring import open_vault

    vault = open_vault(load_cli_settings(config), master_key_env=master_key_env())
    if not vault.delete(name):
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
    vault = open_vault(settings, master_key_env=None)
    old = load_keyring(env_value=None, key_file=path)
    if old is None:
        raise fail("no master key")
    new_key = MasterKey.generate()
    # Publish the new key first (old keys kept), so readers can open envelopes of either key mid-way.
    write_key_file(path, Keyring(current=new_key, others=(old.current, *old.others)))
    vault.reload_keyring(load_keyring(env_value=None, key_file=path))
    count = vault.rotate_master(new_key)
    write_key_file(path, Keyring(current=new_key, others=()))
    typer.echo(f"re-wrapped {count} secret(s) under key {new_key.key_id}")
