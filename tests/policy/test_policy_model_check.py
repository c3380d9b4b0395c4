"""Attack 9: the evaluator checked against the reference model on 100,000+ random cases.

Plain seeded randomness instead of hypothesis here: shrinking is what makes hypothesis slow, and at
this volume a failing case is reported with its seed and can be replayed. Set
``MCP_GATEWAY_MODEL_CHECK_CASES`` for a larger local run.
"""

from __future__ import annotations

import os
import random
from typing import Any

import yaml
from test_policy_evaluate import ARG_NAMES, POOL, TOOL_PATTERNS, TOOLS, _reference_allows

from mcp_gateway.policy.evaluate import evaluate
from mcp_gateway.policy.load import parse_policy_text

CASES = int(os.environ.get("MCP_GATEWAY_MODEL_CHECK_CASES", "100000"))
CALLS_PER_POLICY = 50
PATTERNS = ["a*", "b?", "[ab]+", ".*", "", "A|a"]
NUMBERS = [-1, 0, 1, 2, 0.5, 1.0]
ODD_VALUES: list[Any] = [float("nan"), float("inf"), -float("inf"), {"k": "a"}]


def _constraint(rng: random.Random) -> dict[str, Any]:
    constraint: dict[str, Any] = {}
    kinds = ["in", "not_in", "pattern", "min", "max", "max_length", "subset_of", "required"]
    for kind in rng.sample(kinds, 2):
        if kind in ("in", "not_in", "subset_of"):
            constraint[kind] = rng.sample(POOL, rng.randint(0, 3))
        elif kind == "pattern":
            constraint[kind] = rng.choice(PATTERNS)
        elif kind in ("min", "max"):
            constraint[kind] = rng.choice(NUMBERS)
        elif kind == "max_length":
            constraint[kind] = rng.randint(0, 3)
        else:
            constraint[kind] = rng.random() < 0.5
    if "min" in constraint and "max" in constraint and constraint["min"] > constraint["max"]:
        constraint["min"], constraint["max"] = constraint["max"], constraint["min"]
    return constraint


def _document(rng: random.Random) -> dict[str, Any]:
    agents: dict[str, Any] = {}
    for agent in rng.sample(["a1", "a2"], rng.randint(1, 2)):
        grants = []
        for _ in range(rng.randint(1, 3)):
            grant: dict[str, Any] = {
                "tool": rng.choice(TOOL_PATTERNS),
                "args": {name: _constraint(rng) for name in rng.sample(ARG_NAMES, rng.randint(0, 2))},
            }
            if rng.random() < 0.3:
                names = rng.sample(ARG_NAMES, rng.randint(1, 2))
                grant["deny"] = [{"args": {name: _constraint(rng) for name in names}}]
            grants.append(grant)
        agents[agent] = {"grants": grants}
    return {"version": 1, "agents": agents}


def _value(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.75:
        return rng.choice(POOL)
    if roll < 0.95:
        return rng.sample(POOL, rng.randint(0, 3))
    return rng.choice(ODD_VALUES)


def test_the_evaluator_never_allows_what_the_reference_model_denies_over_100000_cases() -> None:
    seed = int(os.environ.get("MCP_GATEWAY_MODEL_CHECK_SEED", "20261125"))
    rng = random.Random(seed)  # noqa: S311 - reproducible test cases, not cryptography
    checked = allowed = 0
    while checked < CASES:
        document = _document(rng)
        policy = parse_policy_text(yaml.dump(document, Dumper=yaml.CSafeDumper), "generated.yaml")
        agents = [*document["agents"], "stranger"]
        for _ in range(CALLS_PER_POLICY):
            agent = rng.choice(agents)
            tool = rng.choice([*TOOLS, "v.d"])
            args = {name: _value(rng) for name in ARG_NAMES if rng.random() < 0.7}
            decision = evaluate(policy, agent, tool, args)
            expected = _reference_allows(document, agent, tool, args)
            assert not (decision.allowed and not expected), (seed, document, agent, tool, args, decision)
            assert decision.allowed == expected, (seed, document, agent, tool, args, decision)
            checked += 1
            allowed += decision.allowed
    # Both outcomes must be common, or the check says little.
    assert 0.1 * checked < allowed < 0.9 * checked, allowed
