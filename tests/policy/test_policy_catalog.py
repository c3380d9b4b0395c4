"""Grants of tools that do not exist: an unknown built-in name is an error with file:line; a grant that
matches no tool in an upstream's pinned catalog is a warning (``policy check --catalog``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mcp_gateway.app.toolsets import builtin_tool_names as builtin_tools
from mcp_gateway.cli import app
from mcp_gateway.errors import PolicyLoadError
from mcp_gateway.pins.store import SQLitePinStore
from mcp_gateway.policy.catalog import UpstreamCatalog, builtin_name_problems, check_catalog
from mcp_gateway.policy.load import load_policy, parse_policy_text

runner = CliRunner()
BUILTIN = {
    "data": frozenset({"data.update_rows", "data.clone_table"}),
    "ops": frozenset({"ops.rerun_job"}),
    "gateway": frozenset({"gateway.echo"}),
}

POLICY = """\
version: 1
agents:
  fixer:
    grants:
      - id: typo
        tool: data.update_row
      - id: fine
        tool: data.update_rows
      - id: all-data
        tool: "data.*"
      - id: no-such-ops
        tool: "ops.delete_*"
      - id: time-typo
        tool: time.get_current_tim
      - id: time-all
        tool: "time.*"
      - id: stranger
        tool: nowhere.thing
      - id: later
        tool: later.tool
"""


def test_a_grant_of_an_unknown_built_in_tool_is_an_error_with_file_line_and_a_suggestion() -> None:
    policy = parse_policy_text(POLICY, "p.yaml")
    assert builtin_name_problems(policy, BUILTIN) == [
        "p.yaml:5: grant `typo` names unknown built-in tool `data.update_row` (no `data` tool matches;"
        " it would grant nothing); did you mean `data.update_rows`?",
        "p.yaml:11: grant `no-such-ops` names unknown built-in pattern `ops.delete_*` (no `ops` tool"
        " matches; it would grant nothing)",
    ]


def test_loading_with_the_built_in_names_refuses_the_policy_in_one_pass_with_other_problems(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.yaml").write_text(POLICY)
    (tmp_path / "b.yaml").write_text("version: 1\nagents:\n  other:\n    grants:\n      - {tool: x, mx: 1}\n")
    assert load_policy(tmp_path / "a.yaml").agents  # without the names: loads, as before
    with pytest.raises(PolicyLoadError) as refused:
        load_policy(tmp_path, builtin_tools=BUILTIN)
    problems = refused.value.problems
    assert any(p.startswith(f"{tmp_path / 'b.yaml'}:5: unknown key `mx`") for p in problems)
    assert any(p.startswith(f"{tmp_path / 'a.yaml'}:5: grant `typo`") for p in problems)


def test_grants_matching_no_pinned_upstream_tool_are_warnings_and_unlisted_upstreams_are_named() -> None:
    policy = parse_policy_text(POLICY, "p.yaml")
    upstreams = {
        "time": UpstreamCatalog("time.", frozenset({"time.get_current_time", "time.convert_time"})),
        "later": UpstreamCatalog("later.", None),
    }
    findings = check_catalog(policy, BUILTIN, upstreams)
    assert len(findings.errors) == 2  # the built-in ones stay errors
    assert findings.warnings == (
        "p.yaml:13: grant `time-typo` tool `time.get_current_tim` matches no tool in upstream `time`'s"
        " pinned catalog (2 tools); did you mean `time.get_current_time`?",
        "p.yaml:17: grant `stranger` names tool `nowhere.thing`, which is under no built-in toolset and"
        " no configured upstream's prefix",
        "upstream `later` has no pinned catalog yet (the gateway has not listed it): its grants were"
        " not checked",
    )
    assert check_catalog(policy, BUILTIN).warnings == ()  # no catalog asked for: no upstream check


def test_the_cli_knows_every_built_in_tool_whether_or_not_its_toolset_is_configured() -> None:
    names = builtin_tools()
    assert set(names) == {"gateway", "data", "ops", "salesforce"}
    assert "data.update_rows" in names["data"] and "data.update_row" not in names["data"]
    assert "salesforce.patch_record" in names["salesforce"] and "ops.rerun_job" in names["ops"]


@pytest.fixture
def gateway_dir(tmp_path: Path) -> Path:
    (tmp_path / "policies").mkdir()
    raw = {
        "data_dir": "data",
        "policies": "policies",
        "upstreams": {"time": {"transport": "stdio", "command": "mcp-server-time"}},
    }
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path


def _check(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["policy", "check", *args])
    return result.exit_code, result.stdout, result.stderr


def test_policy_check_fails_on_a_grant_of_a_built_in_tool_that_does_not_exist(gateway_dir: Path) -> None:
    policy = gateway_dir / "policies" / "p.yaml"
    policy.write_text("version: 1\nagents:\n  fixer:\n    grants:\n      - tool: data.update_row\n")
    code, out, err = _check("-c", str(gateway_dir / "gateway.yaml"))
    assert code == 1 and out == ""
    assert f"{policy}:5: grant `fixer/data.update_row#0` names unknown built-in tool `data.update_row`" in err
    assert "did you mean `data.update_rows`?" in err
    policy.write_text("version: 1\nagents:\n  fixer:\n    grants:\n      - tool: data.update_rows\n")
    code, out, _ = _check("-c", str(gateway_dir / "gateway.yaml"))
    assert code == 0 and out.startswith("ok:")


def test_policy_check_catalog_warns_against_the_pinned_catalog_opened_read_only(gateway_dir: Path) -> None:
    policy = gateway_dir / "policies" / "p.yaml"
    policy.write_text(
        "version: 1\nagents:\n  a:\n    grants:\n      - tool: time.get_current_time\n"
        "      - tool: time.get_curent_time\n"
    )
    config = str(gateway_dir / "gateway.yaml")
    code, _, err = _check("-c", config, "--catalog")
    assert code == 1 and "no pin store" in err
    pins_path = gateway_dir / "data" / "pins.db"
    pins = SQLitePinStore(pins_path)
    pins.pin("time", "get_current_time", "a" * 64, "{}")
    pins.close()
    os.chmod(pins_path, stat.S_IRUSR)  # read-only: any write (or migration) by the check would fail
    before = pins_path.read_bytes()
    code, out, err = _check("-c", config, "--catalog")
    assert code == 0 and "1 warning" in out
    assert f"warning: {policy}:6: grant `a/time.get_curent_time#1` tool `time.get_curent_time`" in err
    assert "did you mean `time.get_current_time`?" in err and "get_current_time#0" not in err
    assert pins_path.read_bytes() == before
    code, _, _ = _check("-c", config, "--catalog", "--strict")
    assert code == 1
    code, out, err = _check("-c", config)  # without --catalog: upstream grants are not judged
    assert code == 0 and err == ""


def test_a_gateway_does_not_start_on_a_grant_of_an_unknown_built_in_and_a_reload_keeps_the_last_good_policy(
    tmp_path: Path,
) -> None:
    from mcp_gateway.app.wiring import build_runtime
    from mcp_gateway.config import Settings

    policies = tmp_path / "policies"
    policies.mkdir()
    bad = "version: 1\nagents:\n  fixer:\n    grants:\n      - id: typo\n        tool: data.update_row\n"
    (policies / "policy.yaml").write_text(bad)
    settings = Settings.model_validate({"data_dir": str(tmp_path / "data"), "policies": str(policies)})
    with pytest.raises(
        PolicyLoadError, match=r"policy\.yaml:5: grant `typo` names unknown built-in tool `data\.update_row`"
    ):
        build_runtime(settings, master_key_env=None)
    good = bad.replace("data.update_row\n", "data.update_rows\n")
    (policies / "policy.yaml").write_text(good)
    runtime = build_runtime(settings, master_key_env=None)
    try:
        holder = runtime.gateway.policy
        (policies / "policy.yaml").write_text(bad)
        assert holder.reload() is not None and "data.update_row" in (holder.last_error or "")
        assert [g.tool for g in holder.policy.agents["fixer"]] == ["data.update_rows"]
    finally:
        runtime.close()
