"""``MCP_GATEWAY_MASTER_KEY_FILE``: the master key from a container secret file, never echoed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcp_gateway.cli import app
from mcp_gateway.vault.crypto import MasterKey, encode_key

runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text("version: 1\nagents: {}\n")
    path = tmp_path / "gateway.yaml"
    # No key file: the key comes from the environment (or the file it names) or nowhere.
    path.write_text("data_dir: data\npolicies: policies\nvault: {key_file: null}\n")
    return path


def _key_file(tmp_path: Path, mode: int, text: str | None = None) -> tuple[Path, str]:
    key = text if text is not None else encode_key(MasterKey.generate())
    path = tmp_path / "secrets" / "master_key"
    path.parent.mkdir(exist_ok=True)
    path.write_text(key + "\n")  # secret tools add a newline; it is ignored
    path.chmod(mode)
    return path, key


def _put(config: Path, env: dict[str, str | None]) -> tuple[int, str]:
    base: dict[str, str | None] = {"MCP_GATEWAY_MASTER_KEY": None, "MCP_GATEWAY_MASTER_KEY_FILE": None}
    result = runner.invoke(app, ["vault", "put", "db", "-c", str(config)], input="v", env={**base, **env})
    return result.exit_code, result.stdout + result.stderr


@pytest.mark.parametrize("mode", [0o400, 0o600, 0o440, 0o640])
def test_a_key_file_named_by_the_environment_unseals_the_vault(
    tmp_path: Path, config: Path, mode: int
) -> None:
    path, key = _key_file(tmp_path, mode)
    code, out = _put(config, {"MCP_GATEWAY_MASTER_KEY_FILE": str(path)})
    assert code == 0, out
    # The same key given directly opens the same vault; no key at all finds it sealed.
    assert _put(config, {"MCP_GATEWAY_MASTER_KEY": key})[0] == 0
    code, out = _put(config, {})
    assert code != 0 and "sealed" in out


@pytest.mark.parametrize("mode", [0o604, 0o644, 0o606, 0o601])
def test_a_key_file_other_users_may_open_is_refused_without_echoing_it(
    tmp_path: Path, config: Path, mode: int
) -> None:
    path, key = _key_file(tmp_path, mode)
    code, out = _put(config, {"MCP_GATEWAY_MASTER_KEY_FILE": str(path)})
    assert code == 1
    assert f"`{path}` has mode {mode:04o}" in out
    assert key not in out


def test_the_variable_and_the_file_together_are_refused(tmp_path: Path, config: Path) -> None:
    path, key = _key_file(tmp_path, 0o600)
    code, out = _put(config, {"MCP_GATEWAY_MASTER_KEY": key, "MCP_GATEWAY_MASTER_KEY_FILE": str(path)})
    assert code == 1
    assert "not both" in out and key not in out


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: None, "No such file"),
        (lambda p: p.mkdir(), "Is a directory"),
        (lambda p: os.mkfifo(p, 0o600), "not a regular file"),
        (lambda p: (p.write_text("  \n"), p.chmod(0o600)), "is empty"),
    ],
)
def test_a_missing_fifo_directory_or_empty_key_file_is_a_clear_error(
    tmp_path: Path, config: Path, make: object, says: str
) -> None:
    path = tmp_path / "master_key"
    make(path)  # type: ignore[operator]
    code, out = _put(config, {"MCP_GATEWAY_MASTER_KEY_FILE": str(path)})
    assert code == 1
    assert says in out and str(path) in out


def test_a_malformed_key_in_the_file_is_refused_without_echoing_it(tmp_path: Path, config: Path) -> None:
    text = "not-a-key-but-maybe-a-password-7f1c"
    path, _ = _key_file(tmp_path, 0o600, text)
    code, out = _put(config, {"MCP_GATEWAY_MASTER_KEY_FILE": str(path)})
    assert code == 1
    assert text not in out
