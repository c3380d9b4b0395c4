"""``mcp-gateway vault``: every change audited before it happens, never with a value; key checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.cli import app
from mcp_gateway.vault.crypto import Keyring, MasterKey, encode_key
from mcp_gateway.vault.keys import write_key_file

runner = CliRunner()

SECRET = "v4lue-that-must-never-be-audited-91f3"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text("version: 1\nagents: {}\n")
    path = tmp_path / "gateway.yaml"
    path.write_text("data_dir: data\npolicies: policies\n")
    return path


def _run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=stdin, env=env)
    return result.exit_code, result.stdout, result.stderr


def _trail(config: Path) -> list[tuple[str, str, str | None]]:
    sink = SQLiteAuditSink(config.parent / "data" / "audit.db")
    try:
        records = sink.records()
    finally:
        sink.close()
    return [(r.kind, r.status, r.detail.get("secret")) for r in records if r.kind.startswith("vault_")]


def _audit_bytes(config: Path) -> bytes:
    data = config.parent / "data"
    return b"".join(p.read_bytes() for p in data.glob("audit.db*") if p.is_file())


def _names(config: Path) -> list[str]:
    code, out, _ = _run("vault", "list", "-c", str(config))
    assert code == 0
    names = [line.split("\t")[0].removeprefix("name=") for line in out.splitlines()]
    return [name for name in names if not name.startswith("audit-")]  # the audit's own keys


def test_vault_changes_are_audited_in_order_naming_the_secret_and_never_its_value(config: Path) -> None:
    c = str(config)
    assert _run("vault", "init", "-c", c)[0] == 0
    assert _run("vault", "put", "db-password", "-c", c, stdin=SECRET)[0] == 0
    assert _run("vault", "put", "db-password", "-c", c, stdin=SECRET + "-2")[0] == 0
    assert _run("vault", "rotate-master", "-c", c)[0] == 0
    assert _run("vault", "rm", "db-password", "-c", c)[0] == 0
    assert _run("vault", "rm", "db-password", "-c", c)[0] != 0
    assert _trail(config) == [
        ("vault_init", "requested", None),
        ("vault_init", "ok", None),
        ("vault_put", "requested", "db-password"),
        ("vault_put", "ok", "db-password"),
        ("vault_put", "requested", "db-password"),
        ("vault_put", "ok", "db-password"),
        ("vault_rotate_master", "requested", None),
        ("vault_rotate_master", "ok", None),
        ("vault_rm", "requested", "db-password"),
        ("vault_rm", "ok", "db-password"),
        ("vault_rm", "requested", "db-password"),
        ("vault_rm", "none_matched", "db-password"),
    ]
    raw = _audit_bytes(config)
    assert raw and SECRET.encode() not in raw  # not in the main file, not in the WAL
    key = json.loads((config.parent / "data" / "master.key").read_text())
    assert all(text.encode() not in raw for text in key["keys"].values())  # nor a master key


@pytest.mark.parametrize("command", ["init", "put", "rm", "rotate-master", "rotate-state-key"])
def test_a_vault_change_the_audit_cannot_record_does_not_happen(config: Path, command: str) -> None:
    c = str(config)
    data = config.parent / "data"
    if command != "init":
        assert _run("vault", "init", "-c", c)[0] == 0
        assert _run("vault", "put", "kept", "-c", c, stdin=SECRET)[0] == 0
    key_before = (data / "master.key").read_bytes() if command != "init" else None
    for path in data.glob("audit.db*"):
        path.unlink()
    (data / "audit.db").mkdir(parents=True)  # a directory where the audit file must go
    args = {
        "init": ["init"],
        "put": ["put", "new-secret"],
        "rm": ["rm", "kept"],
        "rotate-master": ["rotate-master"],
        "rotate-state-key": ["rotate-state-key"],
    }[command]
    code, _, err = _run("vault", *args, "-c", c, stdin="another-value")
    assert code != 0 and "audit store" in err, err
    if command == "init":
        assert not (data / "master.key").exists()
    else:
        assert (data / "master.key").read_bytes() == key_before
        assert _names(config) == ["kept"]


def test_vault_put_with_a_key_that_is_not_the_vaults_fails_naming_both_key_ids(config: Path) -> None:
    c = str(config)
    assert _run("vault", "init", "-c", c)[0] == 0
    assert _run("vault", "put", "s", "-c", c, stdin=SECRET)[0] == 0
    right = json.loads((config.parent / "data" / "master.key").read_text())["current"]
    wrong = MasterKey.generate()
    write_key_file(config.parent / "data" / "master.key", Keyring(wrong))
    code, _, err = _run("vault", "put", "t", "-c", c, stdin=SECRET)
    assert code != 0 and f"`{wrong.key_id}`" in err and f"expects `{right}`" in err
    assert _names(config) == ["s"]
    # An environment key that is not the vault's is refused the same way.
    env = {"MCP_GATEWAY_MASTER_KEY": encode_key(MasterKey.generate())}
    write_key_file(config.parent / "data" / "master.key", Keyring(wrong))
    assert _run("vault", "put", "t", "-c", c, stdin=SECRET, env=env)[0] != 0


def test_vault_init_refuses_an_existing_key_file_that_is_not_the_vaults(config: Path) -> None:
    c = str(config)
    assert _run("vault", "init", "-c", c)[0] == 0
    assert _run("vault", "put", "s", "-c", c, stdin=SECRET)[0] == 0
    wrong = MasterKey.generate()
    write_key_file(config.parent / "data" / "master.key", Keyring(wrong))
    code, _, err = _run("vault", "init", "-c", c)
    assert code != 0 and "is not this vault's key" in err
    assert _trail(config)[-2:] == [("vault_init", "requested", None), ("vault_init", "error", None)]


def test_vault_list_without_a_vault_lists_nothing_and_creates_no_store(config: Path) -> None:
    code, out, err = _run("vault", "list", "-c", str(config), "--json")
    assert (code, out, err) == (0, "", "")
    data = config.parent / "data"
    assert not data.exists() or not [p.name for p in data.iterdir() if p.name.startswith("vault")]


def test_rotate_state_key_keeps_the_previous_key_is_audited_and_no_key_reaches_the_record(
    config: Path,
) -> None:
    from mcp_gateway.app.wiring import open_vault
    from mcp_gateway.config import load_settings

    c = str(config)
    code, _, err = _run("vault", "rotate-state-key", "-c", c)
    assert code == 1 and "no master key" in err  # nothing rotated
    assert _run("vault", "init", "-c", c)[0] == 0
    keys = []
    for _ in range(2):
        code, out, err = _run("vault", "rotate-state-key", "-c", c)
        assert code == 0, err
        assert out.startswith("rotated request-state-key: restart each gateway")
        vault = open_vault(load_settings(config), master_key_env=None)
        try:
            keys.append(
                (
                    vault.resolve("request-state-key").reveal(),
                    vault.resolve("request-state-key.previous").reveal(),
                )
            )
        finally:
            vault.close()
    (first, first_previous), (second, second_previous) = keys
    assert second_previous == first and len({first, first_previous, second}) == 3
    assert [t for t in _trail(config) if t[0] == "vault_rotate_state_key"] == [
        ("vault_rotate_state_key", "requested", "request-state-key"),
        ("vault_rotate_state_key", "ok", "request-state-key"),
    ] * 2
    raw = _audit_bytes(config)
    assert all(key not in raw for key in (first, first_previous, second))
    assert {"request-state-key", "request-state-key.previous"} <= set(_all_names(config))


def _all_names(config: Path) -> list[str]:
    code, out, _ = _run("vault", "list", "-c", str(config))
    assert code == 0
    return [line.split("\t")[0] for line in out.splitlines()]
