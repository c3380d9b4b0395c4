"""Grant `scopes`: they narrow what an OAuth caller may do and leave agent tokens alone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.errors import PolicyLoadError
from mcp_gateway.policy.evaluate import evaluate, granted_tools, is_granted
from mcp_gateway.policy.explain import explain
from mcp_gateway.policy.load import parse_policy_text

POLICY = parse_policy_text(
    """\
version: 1
agents:
  bot:
    grants:
      - id: read
        tool: db.read
      - id: write
        tool: db.write
        scopes: [db:write]
        deny:
          - id: no-prod
            args: {table: {in: [prod]}}
      - id: admin
        tool: "db.*"
        scopes: [db:write, db:admin]
      - id: write-any
        tool: db.write
""",
    "scopes.yaml",
)
SCOPED = parse_policy_text(
    """\
version: 1
agents:
  bot:
    grants:
      - id: write
        tool: db.write
        scopes: [db:write]
""",
    "scoped.yaml",
)
TOOLS = ["db.read", "db.write", "db.drop"]


@pytest.mark.parametrize(
    ("scopes", "visible"),
    [
        (None, ["db.read", "db.write", "db.drop"]),
        (frozenset(), ["db.read", "db.write"]),
        (frozenset({"db:write"}), ["db.read", "db.write"]),
        (frozenset({"db:admin"}), ["db.read", "db.write"]),
        (frozenset({"db:write", "db:admin"}), ["db.read", "db.write", "db.drop"]),
    ],
)
def test_a_scoped_grant_shows_its_tools_only_to_tokens_carrying_every_scope(
    scopes: frozenset[str] | None, visible: list[str]
) -> None:
    assert granted_tools(POLICY, "bot", TOOLS, scopes=scopes) == visible


def test_an_oauth_token_without_the_scope_is_refused_like_an_ungranted_tool() -> None:
    decision = evaluate(SCOPED, "bot", "db.write", {}, scopes=frozenset({"db:read"}))
    assert not decision.allowed
    assert decision.rule_ids == ("write",)
    assert decision.reasons == ("grant `write` needs scope(s) `db:write`",)
    assert not is_granted(SCOPED, "bot", "db.write", scopes=frozenset({"db:read"}))
    assert evaluate(SCOPED, "bot", "db.write", {}, scopes=frozenset({"db:write", "x"})).allowed


def test_agent_tokens_are_not_filtered_by_grant_scopes() -> None:
    assert evaluate(SCOPED, "bot", "db.write", {}).allowed
    assert evaluate(SCOPED, "bot", "db.write", {}, scopes=None).allowed
    assert is_granted(SCOPED, "bot", "db.write")


def test_a_scope_never_lifts_a_deny_rule_even_of_a_grant_the_token_cannot_use() -> None:
    # `write-any` needs no scope and would allow; `no-prod` sits on the scoped grant and still fires.
    for scopes in (None, frozenset(), frozenset({"db:write"})):
        decision = evaluate(POLICY, "bot", "db.write", {"table": "prod"}, scopes=scopes)
        assert not decision.allowed and decision.rule_ids == ("no-prod",)
    assert evaluate(POLICY, "bot", "db.write", {"table": "dev"}, scopes=frozenset()).rule_ids == (
        "write-any",
    )


@given(
    granted=st.frozensets(st.sampled_from(["a", "b", "c"])),
    held=st.frozensets(st.sampled_from(["a", "b", "c", "d"])),
)
def test_a_scoped_grant_allows_exactly_when_the_token_holds_a_superset(
    granted: frozenset[str], held: frozenset[str]
) -> None:
    listed = ", ".join(sorted(granted))
    policy = parse_policy_text(
        f"version: 1\nagents:\n  x:\n    grants:\n      - tool: t\n        scopes: [{listed}]\n"
    )
    assert evaluate(policy, "x", "t", {}, scopes=held).allowed == (granted <= held)
    assert evaluate(policy, "x", "t", {}).allowed


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ('["two words"]', "must be one scope token"),
        ("['quo\"te']", "must be one scope token"),
        ('[""]', "must be one scope token"),
        ("write", "expected a list"),
    ],
)
def test_grant_scopes_must_be_a_list_of_scope_tokens(bad: str, expected: str) -> None:
    with pytest.raises(PolicyLoadError) as info:
        parse_policy_text(
            f"version: 1\nagents:\n  x:\n    grants:\n      - tool: t\n        scopes: {bad}\n", "p.yaml"
        )
    assert info.value.problems[0].startswith("p.yaml:6: ")
    assert "scopes" in info.value.problems[0] and expected in info.value.problems[0]


def test_a_policy_without_scopes_loads_as_before_and_reports_no_scopes() -> None:
    policy = parse_policy_text("version: 1\nagents:\n  x:\n    grants:\n      - tool: t\n")
    assert policy.scopes == frozenset()
    assert POLICY.scopes == {"db:write", "db:admin"}


def test_explain_shows_the_scopes_a_grant_needs() -> None:
    assert "scopes: `db:write` (oauth tokens only" in explain(SCOPED, "bot", "db.write", {})
