from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from mcp_gateway.errors import PolicyError, PolicyLoadError
from mcp_gateway.policy.evaluate import evaluate
from mcp_gateway.policy.load import load_policy, parse_policy_text

GOOD = """\
version: 1
agents:
  fixer:
    grants:
      - id: g-{name}
        tool: t.{name}
"""


def _write(directory: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")


def _problems(directory: Path) -> tuple[str, ...]:
    with pytest.raises(PolicyLoadError) as caught:
        load_policy(directory)
    return caught.value.problems


BAD_POLICIES = [
    pytest.param(
        {
            "a.yaml": """\
            version: 1
            agents:
              fixer:
                grants:
                  - tool: t.x
                    tol: t.y
            """
        },
        ["a.yaml:6: unknown key `tol`", "expected one of `id`, `tool`, `args`, `deny`"],
        id="unknown-key",
    ),
    pytest.param(
        {
            "a.yaml": """\
            version: 1
            agents:
              fixer:
                grants:
                  - tool: t.x
                    args:
                      n: {mx: 3}
            """
        },
        ["a.yaml:7: unknown key `mx` in `agents.fixer.grants[0].args.n`"],
        id="unknown-constraint-kind",
    ),
    pytest.param(
        {
            "a.yaml": """\
            version: 1
            agents:
              fixer:
                grants:
                  - tool: t.x
                    args:
                      note:
                        pattern: "(unclosed"
            """
        },
        ["a.yaml:8: `agents.fixer.grants[0].args.note.pattern`: invalid regex `(unclosed`"],
        id="bad-regex",
    ),
    pytest.param(
        {"a.yaml": GOOD.format(name="x"), "b.yaml": GOOD.format(name="x").replace("t.x", "t.y")},
        ["b.yaml:5: duplicate rule id `g-x` (first defined at ", "a.yaml:5)"],
        id="duplicate-id-across-files",
    ),
    pytest.param(
        {
            "a.yaml": """\
            version: 1
            agents:
              fixer:
                grants:
                  - id: same
                    tool: t.x
                    deny:
                      - id: same
            """
        },
        ["a.yaml:8: duplicate rule id `same` (first defined at ", "a.yaml:5)"],
        id="deny-rule-id-clashes-with-grant-id",
    ),
    pytest.param(
        {
            "a.yaml": """\
            version: 1
            agents:
              fixer:
                grants:
                  - tool: t.x
                    tool: t.y
            """
        },
        ["a.yaml:6: duplicate key `tool` (first at line 5)"],
        id="duplicate-yaml-key",
    ),
    pytest.param(
        {
            "a.yaml": """\
            version: 1
            agents:
              fixer:
                grants:
                  - tool: t.x
                    args:
                      limit: {min: "ten"}
            """
        },
        ["a.yaml:7: `agents.fixer.grants[0].args.limit.min`: must be a number"],
        id="wrong-type-for-min",
    ),
    pytest.param(
        {
            "a.yaml": """\
            version: 1
            agents:
              fixer:
                grants:
                  - tool: t.x
                    args:
                      limit: {max: true}
            """
        },
        ["a.yaml:7: `agents.fixer.grants[0].args.limit.max`: must be a number"],
        id="bool-is-not-a-number",
    ),
    pytest.param(
        {
            "a.yaml": """\
            version: 1
            agents:
              fixer:
                grants:
                  - tool: t.x
                    args:
                      limit: {min: 10, max: 1}
            """
        },
        ["a.yaml:7: `agents.fixer.grants[0].args.limit`: min 10 is greater than max 1"],
        id="min-above-max",
    ),
    pytest.param(
        {
            "a.yaml": """\
            version: 1
            agents:
              fixer:
                grants: [
            """
        },
        ["a.yaml:5: invalid yaml: "],
        id="yaml-syntax-error",
    ),
    pytest.param(
        {
            "a.yaml": """\
            version: 1
            agents:
              fixer:
                grants:
                  - args: {}
            """
        },
        ["a.yaml:5: missing key `tool` in `agents.fixer.grants[0]`"],
        id="missing-tool",
    ),
    pytest.param(
        {"a.yaml": "version: 2\nagents: {}\n"},
        ["a.yaml:1: unsupported version `2` (expected 1)"],
        id="unsupported-version",
    ),
    pytest.param({"a.yaml": ""}, ["a.yaml:1: empty policy file"], id="empty-file"),
    pytest.param({"a.yaml": "- version: 1\n"}, ["a.yaml:1: expected a mapping"], id="top-level-list"),
    pytest.param(
        {"a.yaml": "version: 1\nagents:\n  fixer:\n    grants: none\n"},
        ["a.yaml:4: `agents.fixer.grants`: expected a list"],
        id="grants-not-a-list",
    ),
]


@pytest.mark.parametrize(("files", "expected"), BAD_POLICIES)
def test_each_policy_problem_is_reported_with_file_and_line(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    _write(tmp_path, files)
    problems = _problems(tmp_path)
    for fragment in expected:
        assert any(fragment in problem for problem in problems), (fragment, problems)


@pytest.mark.parametrize(("files", "expected"), BAD_POLICIES)
def test_problem_messages_are_lowercase_without_trailing_period(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    _write(tmp_path, files)
    for problem in _problems(tmp_path):
        message = re.sub(r"^.*?:\d+: ", "", problem)
        assert message[0] == "`" or message[0].islower(), problem
        assert not message.endswith("."), problem


def test_problems_from_every_file_are_collected_into_one_error(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "a.yaml": "version: 1\nagents:\n  x:\n    grantz: []\n",
            "b.yaml": "version: 1\nagents:\n  y: {grants: [{tool: t, args: {n: {min: x}}}]}\n",
            "c.yaml": "version: 1\nagents: [\n",
        },
    )
    problems = _problems(tmp_path)
    assert [p.split(":")[0].rsplit("/", 1)[-1] for p in problems] == ["a.yaml", "b.yaml", "c.yaml"]


def test_policy_load_error_is_a_policy_error(tmp_path: Path) -> None:
    _write(tmp_path, {"a.yaml": "version: 1\nbogus: 1\n"})
    with pytest.raises(PolicyError):
        load_policy(tmp_path)


def test_files_in_a_directory_are_merged_in_name_order(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "b.yml": "version: 1\nagents:\n  fixer:\n    grants: [{tool: t.b}]\n",
            "a.yaml": "version: 1\nagents:\n  fixer:\n    description: fixes pipelines\n"
            "    grants: [{tool: t.a}]\n  other:\n    grants: [{tool: t.c}]\n",
            "notes.txt": "not a policy",
            ".hidden.yaml": "not: valid",
        },
    )
    policy = load_policy(tmp_path)
    assert [g.id for g in policy.agents["fixer"]] == ["fixer/t.a#0", "fixer/t.b#1"]
    assert policy.descriptions == {"fixer": "fixes pipelines"}
    assert [Path(s).name for s in policy.sources] == ["a.yaml", "b.yml"]
    assert evaluate(policy, "fixer", "t.b", {}).allowed
    assert evaluate(policy, "other", "t.c", {}).allowed
    assert not evaluate(policy, "other", "t.a", {}).allowed


def test_an_empty_directory_is_a_valid_policy_that_grants_nothing(tmp_path: Path) -> None:
    policy = load_policy(tmp_path)
    assert dict(policy.agents) == {}
    decision = evaluate(policy, "anyone", "t.x", {})
    assert decision.effect == "deny"
    assert decision.rule_ids == ()


def test_a_single_file_can_be_loaded(tmp_path: Path) -> None:
    _write(tmp_path, {"only.yaml": GOOD.format(name="x")})
    assert [g.id for g in load_policy(tmp_path / "only.yaml").agents["fixer"]] == ["g-x"]


def test_a_missing_path_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="no such file or directory"):
        load_policy(tmp_path / "absent")


def test_a_file_that_is_not_utf8_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_bytes(b"version: 1\nagents: {x: {description: \xff}}\n")
    assert any("a.yaml:1: file is not valid utf-8" in p for p in _problems(tmp_path))


def test_parse_policy_text_names_the_given_file_in_errors() -> None:
    with pytest.raises(PolicyLoadError) as caught:
        parse_policy_text("version: 1\nagents:\n  x:\n    nope: 1\n", "team.yaml")
    assert caught.value.problems == (
        "team.yaml:4: unknown key `nope` in `agents.x` (expected one of `description`, `grants`, `rate`)",
    )


def test_grants_and_deny_rules_without_ids_get_positional_default_ids() -> None:
    policy = parse_policy_text(
        "version: 1\nagents:\n  fixer:\n    grants:\n      - tool: t.a\n      - tool: 'e.*'\n"
        "        deny: [{args: {n: {min: 5}}}]\n"
    )
    first, second = policy.agents["fixer"]
    assert (first.id, second.id) == ("fixer/t.a#0", "fixer/e.*#1")
    assert second.deny_rules[0].id == "fixer/e.*#1/deny#0"
    assert policy.rule_ids == {"fixer/t.a#0", "fixer/e.*#1", "fixer/e.*#1/deny#0"}


def test_grant_and_deny_rule_sources_name_file_and_line() -> None:
    policy = parse_policy_text(
        "version: 1\nagents:\n  fixer:\n    grants:\n      - tool: t.a\n        deny:\n          - id: d\n",
        "p.yaml",
    )
    grant = policy.agents["fixer"][0]
    assert grant.source == "p.yaml:5"
    assert grant.deny_rules[0].source == "p.yaml:7"


def test_yes_no_and_dates_stay_strings_so_they_compare_with_json_arguments() -> None:
    policy = parse_policy_text(
        "version: 1\nagents:\n  a:\n    grants:\n      - tool: t\n"
        "        args: {country: {in: [NO, SE]}, day: {in: [2024-01-01]}, flag: {in: [true]}}\n"
    )
    assert evaluate(policy, "a", "t", {"country": "NO", "day": "2024-01-01", "flag": True}).allowed
    assert not evaluate(policy, "a", "t", {"country": False}).allowed


def test_merge_keys_may_be_overridden_without_a_duplicate_key_error() -> None:
    policy = parse_policy_text(
        "version: 1\nagents:\n  a:\n    grants:\n      - &g {tool: t.a}\n      - {<<: *g, tool: t.b}\n"
    )
    assert [g.tool for g in policy.agents["a"]] == ["t.a", "t.b"]
