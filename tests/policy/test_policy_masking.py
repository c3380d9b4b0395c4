"""Column masks in policy: how they are written, combined across rules, and applied to a value; and the
grant's ``read`` limits reaching a built-in tool."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from mcp_gateway.policy.compile import compile_governance
from mcp_gateway.policy.masking import ColumnMask, mask_for, mask_value, table_masks
from mcp_gateway.policy.schema import Grant, PolicyDocument

KEY = b"k" * 32


def test_masks_from_every_matching_rule_combine_and_the_strictest_mode_wins() -> None:
    tables = {
        "pg.crm.*": {"mask": {"Email": "partial", "ssn": "drop"}},
        "pg.crm.customers": {"mask": {"email": "hash", "ssn": "partial"}},
        "pg.other.*": {"mask": {"name": "drop"}},
    }
    masks = table_masks(tables, "pg.crm.customers")
    assert {c: m.mode for c, m in masks.items()} == {"email": "hash", "ssn": "drop"}
    assert mask_for(masks, "EMAIL") == ColumnMask(mode="hash")
    assert table_masks(tables, "pg.sales.orders") == {}


def test_hash_is_keyed_stable_and_hides_the_value() -> None:
    mask = ColumnMask(mode="hash")
    one = mask_value("ada@example.com", mask, KEY)
    assert one == mask_value("ada@example.com", mask, KEY)
    assert one != mask_value("ada@example.com", mask, b"x" * 32)
    assert one.startswith("hmac:") and "ada" not in one
    assert mask_value(None, mask, KEY) is None
    with pytest.raises(ValueError, match="no key"):
        mask_value("x", mask, None)


@pytest.mark.parametrize(
    ("value", "keep", "shown"),
    [("+1 415 555 0142", 2, "****42"), ("abc", 2, "****"), (123456789, 4, "****6789"), ("ab", 0, "****")],
)
def test_partial_keeps_only_the_tail_of_values_long_enough(value: object, keep: int, shown: str) -> None:
    assert mask_value(value, ColumnMask(mode="partial", keep_last=keep), None) == shown


@given(st.text(min_size=0, max_size=40))
def test_a_partial_mask_never_shows_more_than_half_the_value(value: str) -> None:
    shown = mask_value(value, ColumnMask(mode="partial"), None)
    assert len(shown) - 4 <= len(value) // 2


def test_policy_documents_accept_masks_and_read_limits_and_refuse_typos() -> None:
    doc = PolicyDocument.model_validate(
        {
            "version": 1,
            "tables": {
                "pg.crm.customers": {"mask": {"email": "hash", "phone": {"mode": "partial", "keep_last": 2}}}
            },
            "agents": {
                "a": {"grants": [{"tool": "data.query", "max_rows": 20, "read": {"tables": ["pg.crm.*"]}}]}
            },
        }
    )
    assert doc.tables["pg.crm.customers"].mask["phone"] == ColumnMask(mode="partial", keep_last=2)
    with pytest.raises(ValidationError):
        PolicyDocument.model_validate({"version": 1, "tables": {"t": {"mask": {"email": "scramble"}}}})
    with pytest.raises(ValidationError):
        Grant.model_validate({"tool": "data.query", "read": {"table": ["x"]}})
    with pytest.raises(ValidationError):
        Grant.model_validate({"tool": "data.query", "read": {"tables": ["x"], "timeout_ms": 600000}})


def test_the_grant_read_limits_become_the_tool_grant_limits() -> None:
    grant = Grant.model_validate(
        {"tool": "data.query", "max_rows": 20, "read": {"tables": ["pg.crm.*"], "production": True}}
    )
    limits = compile_governance(grant, "g", "policy.yaml:1").limits()
    assert limits == {
        "max_rows": 20,
        "read": {"tables": ("pg.crm.*",), "production": True, "branches": True, "timeout_ms": None},
    }
    assert compile_governance(Grant.model_validate({"tool": "x.y"}), "g", "p").limits() == {}
