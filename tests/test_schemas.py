"""The shipped JSON Schemas: generated from the models (and in sync with them), they accept the
shipped examples and the files `init` writes, and refuse a misspelt key where editors can show it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mcp_gateway.schemas import NAMES, REGENERATE, SchemaName, file_name, render, schema_path

ROOT = Path(__file__).parent.parent


def _validator(kind: SchemaName) -> jsonschema.Draft202012Validator:
    schema = json.loads(schema_path(kind).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _flatten(errors: Any) -> list[str]:
    # A `oneOf` (an upstream's transport, the audit backend) fails as a whole; its branches say why.
    return [
        text for e in errors for text in (f"{list(e.absolute_path)}: {e.message}", *_flatten(e.context or ()))
    ]


def _errors(kind: SchemaName, doc: Any) -> list[str]:
    return _flatten(_validator(kind).iter_errors(doc))


@pytest.mark.parametrize("kind", NAMES)
def test_the_shipped_schema_matches_the_models(kind: SchemaName) -> None:
    shipped = schema_path(kind).read_text(encoding="utf-8")
    assert shipped == render(kind), (
        f"src/mcp_gateway/schemas/{file_name(kind)} is stale: a model changed; run `{REGENERATE}`"
    )


@pytest.mark.parametrize(
    ("kind", "path"), [("gateway", "gateway.example.yaml"), ("policy", "policies/example.yaml")]
)
def test_the_shipped_examples_are_valid_and_name_their_schema(kind: SchemaName, path: str) -> None:
    text = (ROOT / path).read_text(encoding="utf-8")
    first = text.splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    assert (ROOT / path).parent.joinpath(first.split("$schema=", 1)[1]).resolve() == schema_path(
        kind
    ).resolve()
    assert _errors(kind, yaml.safe_load(text)) == []


def test_the_files_init_writes_are_valid(tmp_path: Path) -> None:
    from mcp_gateway.cli.init import scaffold

    config, policy, *_ = scaffold(tmp_path / "cfg", port=8080)
    assert _errors("gateway", yaml.safe_load(config.read_text())) == []
    assert _errors("policy", yaml.safe_load(policy.read_text())) == []


@pytest.mark.parametrize(
    ("kind", "doc", "bad"),
    [
        ("gateway", {"servr": {"port": 1}}, "'servr' was unexpected"),
        ("gateway", {"server": {"prot": 1}}, "'prot' was unexpected"),
        ("gateway", {"upstreams": {"t": {"transport": "stdio", "comand": "x"}}}, "'comand' was unexpected"),
        (
            "gateway",
            {"audit": {"backend": "sqlite", "checkpoint_evry": 5}},
            "'checkpoint_evry' was unexpected",
        ),
        ("policy", {"version": 1, "agnets": {}}, "'agnets' was unexpected"),
        (
            "policy",
            {"version": 1, "agents": {"a": {"grants": [{"tool": "x", "args": {"t": {"mx": 1}}}]}}},
            "'mx' was unexpected",
        ),
    ],
)
def test_a_misspelt_key_is_refused(kind: SchemaName, doc: dict[str, Any], bad: str) -> None:
    assert any(bad in error for error in _errors(kind, doc))


def test_a_wrong_type_is_refused() -> None:
    assert _errors("gateway", {"server": {"port": "eighty"}})
    assert _errors("policy", {"version": 2})
