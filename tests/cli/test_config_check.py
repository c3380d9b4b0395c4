"""`mcp-gateway config check`: every problem of a whole config as `file:line: message`, nothing started,
no store created, no value from the files printed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcp_gateway.cli import app
from mcp_gateway.vault.keys import init_key_file

ROOT = Path(__file__).parent.parent.parent

POLICY = """\
version: 1
agents:
  bot:
    grants:
      - id: bot-time
        tool: time.get_current_time
"""


def _check(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["config", "check", *args], env={"MCP_GATEWAY_MASTER_KEY": ""})
    return result.exit_code, result.output


def _folder(tmp_path: Path, gateway: str, policy: str = POLICY) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "bot.yaml").write_text(policy)
    config = tmp_path / "gateway.yaml"
    config.write_text(gateway)
    init_key_file(tmp_path / "data" / "master.key")
    return config


GATEWAY = """\
data_dir: data
policies: policies
server:
  port: 8080
upstreams:
  time:
    transport: stdio
    command: python
"""


def test_a_valid_folder_passes_and_no_store_is_created(tmp_path: Path) -> None:
    config = _folder(tmp_path, GATEWAY)
    code, out = _check("-c", str(config))
    assert code == 0, out
    assert out.strip() == f"ok: {config} (0 errors, 0 warnings)"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["master.key"]


def test_a_typoed_key_is_reported_with_its_file_and_line(tmp_path: Path) -> None:
    config = _folder(tmp_path, GATEWAY.replace("  port: 8080", "  prot: 8080"))
    code, out = _check("-c", str(config))
    assert code == 1
    assert f"{config}:4: unknown key `server.prot`" in out.splitlines()


def test_a_typoed_key_in_a_policy_file_is_reported_with_its_file_and_line(tmp_path: Path) -> None:
    config = _folder(tmp_path, GATEWAY, POLICY.replace("        tool:", "        tol:"))
    code, out = _check("-c", str(config))
    assert code == 1
    assert any(line.startswith(f"{tmp_path / 'policies' / 'bot.yaml'}:6: ") for line in out.splitlines()), out


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    gateway = GATEWAY.replace("  port: 8080", "  port: 8080\n  hots: x") + "telemetry: {exporter: nope}\n"
    code, out = _check("-c", str(_folder(tmp_path, gateway)))
    assert code == 1
    assert "unknown key `server.hots`" in out and "`telemetry.exporter`" in out


def test_a_grant_naming_an_upstream_that_is_not_configured_is_an_error(tmp_path: Path) -> None:
    policy = POLICY + "      - id: bot-echo\n        tool: everything.echo\n"
    config = _folder(tmp_path, GATEWAY, policy)
    code, out = _check("-c", str(config))
    assert code == 1
    line = next(line for line in out.splitlines() if "bot-echo" in line)
    assert line.startswith(f"{tmp_path / 'policies' / 'bot.yaml'}:7: ")
    assert "`everything.echo`, under no configured upstream's prefix" in line


def test_a_grant_naming_an_unknown_built_in_tool_is_an_error(tmp_path: Path) -> None:
    policy = POLICY + "      - id: bot-data\n        tool: data.update_row\n"
    code, out = _check("-c", str(_folder(tmp_path, GATEWAY, policy)))
    assert code == 1 and "unknown built-in tool `data.update_row`" in out


def test_a_missing_key_is_an_error_when_the_config_names_secrets(tmp_path: Path) -> None:
    gateway = GATEWAY + "    env: {API_KEY: secret://api-key}\n"
    config = _folder(tmp_path, gateway)
    (tmp_path / "data" / "master.key").unlink()
    code, out = _check("-c", str(config))
    assert code == 1 and "no master key: the config names secret:// values" in out
    (tmp_path / "plain").mkdir()
    code, out = _check("-c", str(_folder(tmp_path / "plain", GATEWAY)))
    assert code == 0


def test_a_key_file_readable_by_others_is_an_error(tmp_path: Path) -> None:
    config = _folder(tmp_path, GATEWAY)
    (tmp_path / "data" / "master.key").chmod(0o644)
    code, out = _check("-c", str(config))
    assert code == 1 and "too permissive (mode 0644)" in out


def test_a_data_dir_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    config = _folder(tmp_path, GATEWAY.replace("data_dir: data", "data_dir: blocker"))
    (tmp_path / "blocker").write_text("")
    code, out = _check("-c", str(config))
    assert code == 1 and f"{config}:1: data_dir `{tmp_path / 'blocker'}`" in out


def test_no_value_from_the_config_reaches_the_output(tmp_path: Path) -> None:
    leaked = "sk_live_51HxQvT2eZvKYlo2C0ffee"
    gateway = GATEWAY.replace("  port: 8080", f"  port: {leaked}") + f"  other:\n    transport: {leaked}\n"
    code, out = _check("-c", str(_folder(tmp_path, gateway)), "--json")
    assert code == 1 and "`server.port`" in out and "`upstreams.other`: must be one of" in out
    assert leaked not in out


def test_json_output_lists_each_problem_with_file_line_and_severity(tmp_path: Path) -> None:
    config = _folder(tmp_path, GATEWAY.replace("  port: 8080", "  prot: 8080"))
    code, out = _check("-c", str(config), "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False and doc["config"] == str(config)
    assert doc["problems"] == [
        {"file": str(config), "line": 4, "message": "unknown key `server.prot`", "severity": "error"}
    ]


def test_the_shipped_example_config_passes(tmp_path: Path) -> None:
    shutil.copy(ROOT / "gateway.example.yaml", tmp_path / "gateway.yaml")
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    init_key_file(tmp_path / ".gateway" / "master.key")
    code, out = _check("-c", str(tmp_path / "gateway.yaml"))
    assert code == 0, out


@pytest.mark.parametrize("kind", ["gateway", "policy"])
def test_config_schema_prints_the_shipped_schema(kind: str) -> None:
    from mcp_gateway.schemas import schema_path

    result = CliRunner().invoke(app, ["config", "schema", kind])
    assert result.exit_code == 0
    assert json.loads(result.output) == json.loads(schema_path(kind).read_text())  # type: ignore[arg-type]


def test_config_schema_refuses_an_unknown_kind() -> None:
    result = CliRunner().invoke(app, ["config", "schema", "gatewy"])
    assert result.exit_code == 1 and "unknown schema `gatewy`" in result.output


SECRETS = """\
    env: {API_KEY: secret://api-key}  # secret://in-a-comment is not a reference
  github:
    transport: http
    url: https://api.github.example/mcp
    headers:
      Authorization: Bearer secret://gh-token
"""


def _vault_with(tmp_path: Path, config: Path, *names: str) -> None:
    from mcp_gateway.app.wiring import open_vault
    from mcp_gateway.config import load_settings

    vault = open_vault(load_settings(config), master_key_env=None)
    try:
        for name in names:
            vault.put(name, b"value-of-" + name.encode())
    finally:
        vault.close()


def test_a_secret_the_vault_does_not_hold_is_an_error_at_its_line_and_the_vault_is_only_read(
    tmp_path: Path,
) -> None:
    config = _folder(tmp_path, GATEWAY + SECRETS)
    _vault_with(tmp_path, config, "gh-token")
    vault_file = tmp_path / "data" / "vault.db"
    before = vault_file.read_bytes(), vault_file.stat().st_mtime_ns
    code, out = _check("-c", str(config))
    assert code == 1, out
    problems = [line for line in out.splitlines() if "secret://" in line]
    assert problems == [
        f"{config}:9: secret://api-key is not in the vault (add it: `mcp-gateway vault put api-key`)"
    ]
    assert "value-of-" not in out
    assert (vault_file.read_bytes(), vault_file.stat().st_mtime_ns) == before
    _vault_with(tmp_path, config, "api-key")
    code, out = _check("-c", str(config))
    assert code == 0, out


def test_without_a_vault_store_the_references_are_a_warning_and_none_is_created(tmp_path: Path) -> None:
    config = _folder(tmp_path, GATEWAY + SECRETS)
    code, out = _check("-c", str(config))
    assert code == 0, out
    assert (
        f"{config}:9: warning: no vault store yet: cannot check that it holds secret://api-key, secret://gh-token"
        in out
    )
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["master.key"]


def test_a_postgres_vault_is_checked_read_only_and_an_unset_schema_is_a_warning(
    tmp_path: Path, pg_schema: str
) -> None:
    from conftest import PG_DSN

    store = f"vault:\n  store: {{backend: postgres, dsn: '{PG_DSN}', schema: {pg_schema}}}\n"
    config = _folder(tmp_path, GATEWAY + SECRETS + store)
    code, out = _check("-c", str(config))
    assert code == 0 and "warning: no vault store yet" in out, out
    _vault_with(tmp_path, config, "api-key")
    code, out = _check("-c", str(config))
    assert code == 1 and "secret://gh-token is not in the vault" in out and "api-key" not in out, out
    down = "host=127.0.0.1 port=1 user=x password=hunter2-pw dbname=x"
    unreachable = f"vault:\n  store: {{backend: postgres, dsn: '{down}', schema: s}}\n"
    (tmp_path / "down").mkdir()
    config = _folder(tmp_path / "down", GATEWAY + SECRETS + unreachable)
    code, out = _check("-c", str(config))
    assert code == 0 and "warning: cannot check the secret:// references" in out, out
    assert "hunter2-pw" not in out
