"""Limits: each one refuses with a clear error and an audit record, and never crashes or hangs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import GatewayFactory, connect
from mcp_gateway.core.limits import (
    InFlight,
    LimitExceeded,
    LimitSettings,
    check_arguments,
    json_depth,
    result_problem,
    truncate_result,
)
from mcp_gateway.errors import CallRefused

POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - tool: leaky.echo
"""


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    ("value", "depth"), [("x", 0), ({}, 1), ({"a": [1, {"b": 2}]}, 3), (_nested(50), 49)]
)
def test_json_depth_counts_containers(value: Any, depth: int) -> None:
    assert json_depth(value, limit=100) == depth


def test_json_depth_stops_counting_past_the_limit_without_recursing() -> None:
    assert json_depth(_nested(100_000), limit=10) == 11


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"a": _nested(40)}, "nested deeper than 32"),
        ({"a": "x" * 300_000}, "above the limit of 262144"),
    ],
)
def test_arguments_over_a_limit_are_refused_with_the_limit_named(
    arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(LimitExceeded) as info:
        check_arguments(arguments, LimitSettings())
    assert message in str(info.value)


def test_a_result_over_the_limit_is_cut_with_a_marker_and_fits() -> None:
    payload = {
        "content": [{"type": "text", "text": "a" * 5000}, {"type": "text", "text": "b"}],
        "isError": False,
    }
    cut, truncated = truncate_result(payload, 1000)
    assert truncated
    assert len(json.dumps(cut)) <= 1200
    assert cut["content"][-1]["text"].startswith("[truncated by mcp-gateway")
    assert truncate_result({"content": []}, 1000) == ({"content": []}, False)


def _nested(levels: int) -> Any:
    value: Any = "leaf"
    for i in range(levels):
        value = {"k": value} if i % 2 else [value]
    return value


def _levels(n: int) -> Any:
    """Exactly ``n`` levels of objects and arrays."""
    value: Any = "leaf"
    for i in range(n):
        value = {"k": value} if i % 2 else [value]
    return value


@pytest.mark.parametrize(
    ("arguments", "refusal"),
    [
        ({"a": _levels(31)}, None),
        ({"a": _levels(32)}, "nested deeper than 32"),
        ({"a": _levels(5), "b": "[{" * 100}, None),  # brackets inside strings nest nothing
        ({"a": _levels(32), "b": "\ud800"}, "nested deeper than 32"),  # too deep is said first
        ({"a": "\ud800"}, "not valid unicode"),
    ],
    ids=["at-the-limit", "past-the-limit", "brackets-in-text", "deep-and-surrogate", "surrogate"],
)
def test_arguments_within_the_limits_come_back_as_their_json_text(
    arguments: dict[str, Any], refusal: str | None
) -> None:
    if refusal is not None:
        with pytest.raises(CallRefused, match=refusal):
            check_arguments(arguments, LimitSettings())
    else:
        text = check_arguments(arguments, LimitSettings())
        assert text == json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"content": [{"type": "text", "text": "caf\u00e9 \U0001f600 plain"}]}, None),
        (
            {"content": [{"type": "text", "text": "a\ud800b"}]},
            "text that is not valid Unicode (a lone surrogate)",
        ),
        ({"structuredContent": {"k\udfff": 1}}, "text that is not valid Unicode (a lone surrogate)"),
        (_nested(8), None),
        (_nested(9), "a result nested deeper than 8 levels"),
        # Deeper than any recursive walk could go: found without recursing.
        (_nested(100_000), "a result nested deeper than 8 levels"),
    ],
    ids=["unicode", "surrogate-in-text", "surrogate-in-key", "at-the-limit", "past-the-limit", "very-deep"],
)
def test_result_problem_names_what_makes_an_answer_unusable(value: Any, problem: str | None) -> None:
    assert result_problem(value, max_depth=8) == problem


def test_in_flight_refuses_past_the_limit_and_frees_slots() -> None:
    slots = InFlight(2)
    slots.acquire("a")
    slots.acquire("a")
    slots.acquire("b")
    with pytest.raises(LimitExceeded):
        slots.acquire("a")
    slots.release("a")
    slots.acquire("a")


@pytest.mark.anyio
@pytest.mark.e2e
async def test_oversized_and_overdeep_arguments_are_refused_audited_and_never_reach_the_upstream(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(POLICY)
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        deep = await client.call_tool("leaky.echo", {"text": "x", "extra": _nested(60)})
        big = await client.call_tool("leaky.echo", {"text": "y" * 300_000})
    assert deep.is_error and "nested deeper" in deep.content[0].text  # type: ignore[union-attr]
    assert big.is_error and "above the limit" in big.content[0].text  # type: ignore[union-attr]
    assert not gw.call_log.exists()
    refusals = [r for r in gw.audit() if r.kind == "denied"]
    assert [r.status for r in refusals] == ["limit_exceeded", "limit_exceeded"]
    assert all("_omitted" in r.args for r in refusals)
