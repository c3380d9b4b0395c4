from __future__ import annotations

import dataclasses
import fnmatch
import logging
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_gateway.policy.evaluate import evaluate, granted_tools, has_grant, is_granted
from mcp_gateway.policy.load import parse_policy_text
from mcp_gateway.policy.model import Check, Policy

ABSENT = object()


def _policy(agents: dict[str, list[dict[str, Any]]]) -> Policy:
    document = {"version": 1, "agents": {name: {"grants": grants} for name, grants in agents.items()}}
    return parse_policy_text(yaml.safe_dump(document, sort_keys=False), "test.yaml")


def _one_arg(constraint: dict[str, Any]) -> Policy:
    return _policy({"a": [{"id": "g", "tool": "t", "args": {"v": constraint}}]})


CONSTRAINT_CASES = [
    # (constraint, value, allowed, fragment of the deny reason)
    ({"in": ["UTC", "Europe/Paris"]}, "UTC", True, ""),
    ({"in": ["UTC", "Europe/Paris"]}, "Asia/Tokyo", False, "argument `v` = `Asia/Tokyo` is not one of"),
    ({"in": [1, 2]}, 2.0, True, ""),
    ({"in": [1, 2]}, True, False, "(in)"),
    ({"in": ["a"]}, ["a"], False, "(in)"),
    ({"not_in": ["prod.secrets"]}, "prod.public", True, ""),
    ({"not_in": ["prod.secrets"]}, "prod.secrets", False, "is a forbidden value (not_in)"),
    ({"not_in": [0]}, False, True, ""),
    ({"pattern": "^[a-z ]*$"}, "ab c", True, ""),
    ({"pattern": "^[a-z ]*$"}, "ab C", False, "does not match pattern `^[a-z ]*$`"),
    ({"pattern": "[a-z]+"}, "abc1", False, "does not match pattern"),  # fullmatch, not search
    ({"pattern": ".*"}, 5, False, "is not a string (pattern"),
    ({"min": 1}, 1, True, ""),
    ({"min": 1}, 0, False, "argument `v` = 0 is below min 1"),
    ({"min": 0.5}, 0.5, True, ""),
    ({"min": 0.5}, 0.49, False, "is below min 0.5"),
    ({"min": 0}, True, False, "is not a number (min 0)"),
    ({"min": 0}, "5", False, "is not a number (min 0)"),
    ({"min": 0}, math.nan, False, "is not a number"),
    ({"max": 1000}, 1000, True, ""),
    ({"max": 1000}, 1001, False, "argument `v` = 1001 is above max 1000"),
    ({"max": 1000}, math.nan, False, "is not a number"),
    ({"max_length": 3}, "abc", True, ""),
    ({"max_length": 3}, "abcd", False, "has length 4, above max_length 3"),
    ({"max_length": 2}, [1, 2], True, ""),
    ({"max_length": 2}, [1, 2, 3], False, "above max_length 2"),
    ({"max_length": 2}, 7, False, "is not a string or list (max_length 2)"),
    ({"subset_of": ["Name", "Amount"]}, ["Name", "Amount"], True, ""),
    ({"subset_of": ["Name", "Amount"]}, [], True, ""),
    ({"subset_of": ["Name", "Amount"]}, ["Name", "Secret"], False, "has items outside subset_of: `Secret`"),
    ({"subset_of": ["Name"]}, "Name", False, "is not a list or object (subset_of"),
    ({"required": True}, "x", True, ""),
    ({"required": True}, ABSENT, False, "argument `v` is required but absent"),
    ({"min": 1, "in": [5]}, ABSENT, True, ""),
    ({"min": 1, "max": 10}, 11, False, "above max 10"),
]


@pytest.mark.parametrize(("constraint", "value", "allowed", "reason"), CONSTRAINT_CASES)
def test_each_constraint_kind_allows_inside_and_denies_past_its_boundary(
    constraint: dict[str, Any], value: Any, allowed: bool, reason: str
) -> None:
    args = {} if value is ABSENT else {"v": value}
    decision = evaluate(_one_arg(constraint), "a", "t", args)
    assert decision.allowed is allowed
    if allowed:
        assert decision.rule_ids == ("g",)
    else:
        assert decision.rule_ids == ("g",)
        assert any(reason in why for why in decision.reasons), decision.reasons


def test_reasons_show_long_values_truncated() -> None:
    decision = evaluate(_one_arg({"pattern": "[a-z]*"}), "a", "t", {"v": "X" * 10_000})
    (reason,) = decision.reasons
    shown = re.search(r"`(X+…)`", reason)
    assert shown is not None
    assert len(shown.group(1)) <= 64


def test_every_violated_constraint_is_named_in_the_reasons() -> None:
    policy = _policy(
        {"a": [{"id": "g", "tool": "t", "args": {"limit": {"max": 1000}, "note": {"max_length": 2}}}]}
    )
    decision = evaluate(policy, "a", "t", {"limit": 5000, "note": "long"})
    assert decision.reasons == (
        "argument `limit` = 5000 is above max 1000",
        "argument `note` = `long` has length 4, above max_length 2",
    )


def test_arguments_without_constraints_are_not_restricted() -> None:
    decision = evaluate(_one_arg({"max": 1}), "a", "t", {"v": 1, "anything": {"nested": [1, 2]}})
    assert decision.allowed


def test_a_firing_deny_rule_beats_an_allowing_grant() -> None:
    policy = _policy(
        {
            "a": [
                {
                    "id": "time-now",
                    "tool": "time.now",
                    "args": {"tz": {"in": ["UTC", "Asia/Tokyo"]}},
                    "deny": [
                        {"id": "no-tokyo", "args": {"tz": {"in": ["Asia/Tokyo"]}}, "reason": "not there"}
                    ],
                }
            ]
        }
    )
    assert evaluate(policy, "a", "time.now", {"tz": "UTC"}).allowed
    decision = evaluate(policy, "a", "time.now", {"tz": "Asia/Tokyo"})
    assert decision.effect == "deny"
    assert decision.rule_ids == ("no-tokyo",)
    assert decision.reasons == ("denied by rule `no-tokyo`: not there",)


def test_a_deny_rule_on_a_glob_grant_beats_an_exact_grant_that_allows() -> None:
    policy = _policy(
        {
            "a": [
                {"id": "exact", "tool": "db.query"},
                {
                    "id": "all-db",
                    "tool": "db.*",
                    "deny": [{"id": "no-prod", "args": {"t": {"pattern": "prod.*"}}}],
                },
            ]
        }
    )
    assert evaluate(policy, "a", "db.query", {"t": "dev.x"}).rule_ids == ("exact",)
    decision = evaluate(policy, "a", "db.query", {"t": "prod.x"})
    assert (decision.effect, decision.rule_ids) == ("deny", ("no-prod",))


def test_a_deny_rule_fires_only_when_all_its_conditions_match() -> None:
    rule = {"id": "d", "args": {"x": {"min": 10}, "y": {"in": ["a"]}}}
    policy = _policy({"a": [{"tool": "t", "deny": [rule]}]})
    assert evaluate(policy, "a", "t", {"x": 11, "y": "a"}).rule_ids == ("d",)
    assert evaluate(policy, "a", "t", {"x": 11, "y": "b"}).allowed
    assert evaluate(policy, "a", "t", {"x": 11}).allowed  # absent argument: condition does not match
    assert evaluate(policy, "a", "t", {"x": "11", "y": "a"}).allowed  # wrong type does not satisfy min


def test_a_deny_rule_without_conditions_always_fires() -> None:
    policy = _policy({"a": [{"tool": "t", "deny": [{"reason": "tool retired"}]}]})
    decision = evaluate(policy, "a", "t", {})
    assert decision.rule_ids == ("a/t#0/deny#0",)
    assert decision.reasons == ("denied by rule `a/t#0/deny#0`: tool retired",)


def test_any_matching_grant_may_allow_and_its_id_decides() -> None:
    policy = _policy(
        {"a": [{"id": "small", "tool": "t", "args": {"n": {"max": 10}}}, {"id": "big", "tool": "t*"}]}
    )
    assert evaluate(policy, "a", "t", {"n": 5}).rule_ids == ("small",)
    assert evaluate(policy, "a", "t", {"n": 50}).rule_ids == ("big",)


def test_when_every_matching_grant_refuses_all_are_named() -> None:
    policy = _policy(
        {
            "a": [
                {"id": "small", "tool": "t", "args": {"n": {"max": 10}}},
                {"id": "even", "tool": "t", "args": {"n": {"in": [20, 40]}}},
            ]
        }
    )
    decision = evaluate(policy, "a", "t", {"n": 50})
    assert decision.effect == "deny"
    assert decision.rule_ids == ("small", "even")
    assert decision.reasons[0] == "argument `n` = 50 is above max 10 (grant `small`)"
    assert decision.reasons[1].endswith("(in) (grant `even`)")


@pytest.mark.parametrize(
    ("pattern", "tool", "matches"),
    [
        ("everything.*", "everything.echo", True),
        ("everything.*", "everything.", True),
        ("everything.*", "everythingecho", False),
        ("everything.*", "Everything.echo", False),
        ("db.?uery", "db.query", True),
        ("db.?uery", "db.xquery", False),
        ("[ab].x", "b.x", True),
        ("[ab].x", "c.x", False),
        ("*", "anything.at.all", True),
    ],
)
def test_glob_grants_match_tool_names_case_sensitively(pattern: str, tool: str, matches: bool) -> None:
    policy = _policy({"a": [{"tool": pattern}]})
    assert evaluate(policy, "a", tool, {}).allowed is matches
    assert is_granted(policy, "a", tool) is matches


def test_an_unknown_agent_is_denied_exactly_like_an_ungranted_tool() -> None:
    policy = _policy({"a": [{"tool": "t"}]})
    unknown_agent = evaluate(policy, "stranger", "t", {})
    ungranted_tool = evaluate(policy, "a", "u", {})
    assert unknown_agent.effect == ungranted_tool.effect == "deny"
    assert unknown_agent.rule_ids == ungranted_tool.rule_ids == ()
    assert unknown_agent.reasons == ("no grant for tool `t`",)
    assert ungranted_tool.reasons == ("no grant for tool `u`",)


def test_an_exception_inside_a_check_denies_and_logs_no_argument_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = _one_arg({"max": 10})
    grant = policy.agents["a"][0]

    def explode(value: Any) -> str | None:
        raise RuntimeError(f"broken on {value}")

    constraint = dataclasses.replace(grant.constraints[0], checks=(Check("max", "max 10", explode),))
    broken = Policy(agents={"a": (dataclasses.replace(grant, constraints=(constraint,)),)})
    with caplog.at_level(logging.ERROR, logger="mcp_gateway.policy.evaluate"):
        decision = evaluate(broken, "a", "t", {"v": "hunter2"})
    assert (decision.effect, decision.rule_ids, decision.reasons) == (
        "deny",
        (),
        ("policy evaluation failed",),
    )
    assert "RuntimeError" in caplog.text
    assert "hunter2" not in caplog.text


class _ExplodingArgs(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("cannot iterate")

    def __len__(self) -> int:
        return 1

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("cannot read")


def test_arguments_that_fail_to_read_deny_instead_of_allowing() -> None:
    decision = evaluate(_one_arg({"max": 10}), "a", "t", _ExplodingArgs())
    assert decision.reasons == ("policy evaluation failed",)
    assert not decision.allowed


def test_a_failing_index_denies_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = _policy({"a": [{"tool": "t"}]})

    def broken(self: Policy, agent: str, tool: str) -> tuple[()]:
        raise RuntimeError("index corrupted")

    monkeypatch.setattr(Policy, "matching_grants", broken)
    assert evaluate(policy, "a", "t", {}).reasons == ("policy evaluation failed",)
    assert granted_tools(policy, "a", ["t"]) == []


def test_granted_tools_keeps_available_tools_with_a_matching_grant_whatever_its_constraints() -> None:
    policy = _policy(
        {"a": [{"tool": "time.now", "args": {"tz": {"required": True}}}, {"tool": "everything.*"}]}
    )
    available = ["everything.echo", "db.drop", "time.now", "everything.add", "time.later"]
    assert granted_tools(policy, "a", available) == ["everything.echo", "time.now", "everything.add"]
    assert granted_tools(policy, "stranger", available) == []
    assert has_grant(policy, "a", "time.now")
    assert not is_granted(policy, "a", "db.drop")


# --- model check: the evaluator against a slow, separately written reference ---------------------------

TOOLS = ["t.a", "t.b", "u.c"]
TOOL_PATTERNS = [*TOOLS, "t.*", "*", "u.?", "[tu].b"]
ARG_NAMES = ["x", "y"]

# Small pools, so that generated values often sit on a generated boundary or equal a listed value
# (and `true` meets `1`, `1` meets `1.0`), where a wrong comparison would show.
POOL = [None, True, False, 0, 1, 2, 1.0, 0.5, -1, "", "a", "b", "ab", "A"]
scalars = st.sampled_from(POOL)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.sampled_from([math.nan, math.inf, -math.inf, {"k": "a"}, ("a",)]),
)
numbers = st.sampled_from([-1, 0, 1, 2, 0.5, 1.0])
CONSTRAINT_KINDS: dict[str, st.SearchStrategy[Any]] = {
    "in": st.lists(scalars, max_size=3),
    "not_in": st.lists(scalars, max_size=3),
    "pattern": st.sampled_from(["a*", "b?", "[ab]+", ".*", "", "A|a"]),
    "min": numbers,
    "max": numbers,
    "max_length": st.integers(0, 3),
    "subset_of": st.lists(scalars, max_size=3),
    "required": st.booleans(),
}


def _ordered(constraint: dict[str, Any]) -> dict[str, Any]:
    if "min" in constraint and "max" in constraint and constraint["min"] > constraint["max"]:
        constraint["min"], constraint["max"] = constraint["max"], constraint["min"]
    return constraint


PAIRS = [
    ("min", "max"),
    ("required", "in"),
    ("pattern", "max_length"),
    ("required", "subset_of"),
    ("not_in", "max"),
]
# one_of over fixed shapes draws much faster than a flatmap, which keeps 2,000 examples quick.
constraints = st.one_of(
    *(st.fixed_dictionaries({kind: strategy}) for kind, strategy in CONSTRAINT_KINDS.items()),
    *(
        st.fixed_dictionaries({a: CONSTRAINT_KINDS[a], b: CONSTRAINT_KINDS[b]}).map(_ordered)
        for a, b in PAIRS
    ),
)
arg_constraints = st.dictionaries(st.sampled_from(ARG_NAMES), constraints, max_size=2)
# A deny rule without conditions always fires; generating many would hide every allow.
deny_rules = st.fixed_dictionaries(
    {"args": st.dictionaries(st.sampled_from(ARG_NAMES), constraints, min_size=1, max_size=2)}
)
grants = st.fixed_dictionaries(
    {"tool": st.sampled_from(TOOL_PATTERNS), "args": arg_constraints},
    optional={"deny": st.lists(deny_rules, max_size=1)},
)
documents = st.fixed_dictionaries(
    {
        "version": st.just(1),
        "agents": st.dictionaries(
            st.sampled_from(["a1", "a2"]),
            st.fixed_dictionaries({"grants": st.lists(grants, min_size=1, max_size=3)}),
            min_size=1,
        ),
    }
)


def _calls(agents: list[str]) -> st.SearchStrategy[list[tuple[str, str, dict[str, Any]]]]:
    # Mostly agents the policy knows, so that most calls reach the grants' constraints.
    call = st.tuples(
        st.sampled_from([*agents, *agents, *agents, "stranger"]),
        st.sampled_from([*TOOLS, "v.d"]),
        st.fixed_dictionaries({}, optional={name: values for name in ARG_NAMES}),
    )
    return st.lists(call, min_size=1, max_size=8)


def _json_kind(value: Any) -> str | None:
    if value is None:
        return "null"
    if type(value) is bool:
        return "bool"
    if type(value) in (int, float):
        return "number"
    if type(value) is str:
        return "string"
    return None


def _same(a: Any, b: Any) -> bool:
    return _json_kind(a) is not None and _json_kind(a) == _json_kind(b) and a == b


def _number(value: Any) -> bool:
    return _json_kind(value) == "number" and not math.isnan(value)


def _satisfies(constraint: dict[str, Any], value: Any) -> bool:
    results = []
    if "in" in constraint:
        results.append(any(_same(value, x) for x in constraint["in"]))
    if "not_in" in constraint:
        results.append(not any(_same(value, x) for x in constraint["not_in"]))
    if "pattern" in constraint:
        results.append(isinstance(value, str) and re.fullmatch(constraint["pattern"], value) is not None)
    if "min" in constraint:
        results.append(_number(value) and value >= constraint["min"])
    if "max" in constraint:
        results.append(_number(value) and value <= constraint["max"])
    if "max_length" in constraint:
        results.append(isinstance(value, str | list | tuple) and len(value) <= constraint["max_length"])
    if "subset_of" in constraint:
        results.append(
            isinstance(value, list | tuple)
            and all(any(_same(i, x) for x in constraint["subset_of"]) for i in value)
        )
    return all(results)


def _reference_allows(document: dict[str, Any], agent: str, tool: str, args: dict[str, Any]) -> bool:
    agent_policy = document["agents"].get(agent)
    if agent_policy is None:
        return False
    matching = [g for g in agent_policy["grants"] if fnmatch.fnmatchcase(tool, g["tool"])]
    if not matching:
        return False
    for grant in matching:
        for rule in grant.get("deny", []):
            if all(name in args and _satisfies(c, args[name]) for name, c in rule["args"].items()):
                return False
    for grant in matching:
        holds = True
        for name, constraint in grant.get("args", {}).items():
            if name not in args:
                holds = holds and not constraint.get("required", False)
            else:
                holds = holds and _satisfies(constraint, args[name])
        if holds:
            return True
    return False


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_evaluator_never_allows_what_the_reference_model_denies(data: st.DataObject) -> None:
    document: dict[str, Any] = data.draw(documents, label="document")
    policy = parse_policy_text(yaml.dump(document, Dumper=yaml.CSafeDumper), "generated.yaml")
    for agent, tool, args in data.draw(_calls(sorted(document["agents"])), label="calls"):
        decision = evaluate(policy, agent, tool, args)
        expected = _reference_allows(document, agent, tool, args)
        assert not (decision.allowed and not expected), (agent, tool, args, decision)
        assert decision.allowed == expected, (agent, tool, args, decision)
        assert decision.reasons != ("policy evaluation failed",)
