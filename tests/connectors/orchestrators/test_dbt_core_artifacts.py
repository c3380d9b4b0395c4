"""dbt Core without dbt: reading its artifacts, the command line, the environment, and the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mcp_gateway.connectors.orchestrators import dbt_artifacts as art
from mcp_gateway.connectors.orchestrators import dbt_process as proc
from mcp_gateway.connectors.orchestrators.base import OrchestratorError, OrchestratorUnavailable
from mcp_gateway.connectors.orchestrators.config import DbtCoreSettings

SRC = "source.p.raw.orders"


def _node(kind: str, name: str) -> dict[str, Any]:
    return {"resource_type": kind, "name": name, "fqn": ["p", name], "relation_name": f'"db"."s"."{name}"'}


# raw.orders → stg_orders → (fct_orders, test) ; fct_orders → fct_daily ; raw.orders → its own test;
# raw.users → stg_users (not downstream of orders)
MANIFEST: dict[str, Any] = {
    "sources": {
        SRC: {"schema": "Raw", "identifier": "orders", "relation_name": '"db"."raw"."orders"'},
        "source.p.raw.users": {"schema": "raw", "identifier": "users", "relation_name": '"db"."raw"."users"'},
    },
    "nodes": {
        "model.p.stg_orders": _node("model", "stg_orders"),
        "model.p.fct_orders": _node("model", "fct_orders"),
        "model.p.fct_daily": _node("model", "fct_daily"),
        "model.p.stg_users": _node("model", "stg_users"),
        "test.p.not_null_stg.1": _node("test", "not_null_stg"),
        "test.p.source_unique.2": _node("test", "source_unique"),
    },
    "child_map": {
        SRC: ["model.p.stg_orders", "test.p.source_unique.2"],
        "model.p.stg_orders": ["model.p.fct_orders", "test.p.not_null_stg.1"],
        "model.p.fct_orders": ["model.p.fct_daily"],
        "source.p.raw.users": ["model.p.stg_users"],
    },
    "parent_map": {
        "model.p.stg_orders": [SRC],
        "model.p.fct_orders": ["model.p.stg_orders"],
        "model.p.fct_daily": ["model.p.fct_orders"],
        "test.p.not_null_stg.1": ["model.p.stg_orders"],
        "test.p.source_unique.2": [SRC],
    },
}


def test_downstream_models_are_every_model_below_the_source_and_nothing_else() -> None:
    found = art.downstream_models(MANIFEST, SRC)
    assert [m["name"] for m in found] == ["fct_daily", "fct_orders", "stg_orders"]
    assert found[0]["fqn"] == "p.fct_daily"


def test_a_table_maps_to_its_source_by_schema_and_identifier_case_insensitively() -> None:
    assert art.source_for(MANIFEST, "raw", "ORDERS") == SRC
    assert art.source_for(MANIFEST, "other", "orders") is None


def test_upstream_sources_walk_through_models() -> None:
    assert art.upstream_sources(MANIFEST, ["test.p.not_null_stg.1", "model.p.fct_daily"]) == [SRC]


def test_failed_nodes_carry_message_failing_rows_and_compiled_sql() -> None:
    results = {
        "results": [
            {"unique_id": "model.p.stg_orders", "status": "success"},
            {
                "unique_id": "test.p.source_unique.2",
                "status": "fail",
                "failures": 2,
                "message": "Got 2 results",
                "compiled_code": "select 1",
            },
            {"unique_id": "test.p.not_null_stg.1", "status": "warn", "failures": 1},
        ]
    }
    nodes = art.node_results(results)
    assert [n.unique_id for n in nodes if n.failed] == ["test.p.source_unique.2"]
    described = art.describe_failed(nodes[1], MANIFEST)
    assert described == {
        "node": "test.p.source_unique.2",
        "resource_type": "test",
        "name": "source_unique",
        "status": "fail",
        "message": "Got 2 results",
        "failing_rows": 2,
        "compiled_sql": "select 1",
        "depends_on": [SRC],
    }


@pytest.mark.parametrize(
    "document",
    [None, [], {"results": {}}, {"results": [{"status": "fail"}]}, {"results": ["x"]}],
    ids=["null", "list", "results-not-list", "no-unique-id", "result-not-object"],
)
def test_run_results_in_an_unexpected_shape_are_an_unavailable_orchestrator(document: Any) -> None:
    with pytest.raises(OrchestratorUnavailable, match="dbt wrote"):
        art.node_results(document)


def _settings(**extra: Any) -> DbtCoreSettings:
    return DbtCoreSettings.model_validate({"kind": "dbt_core", "project_dir": "/p", **extra})


def test_the_command_line_carries_selectors_and_vars_but_refuses_an_option_as_a_selector(
    tmp_path: Path,
) -> None:
    settings = _settings(target="prod", vars={"source_schema": "raw"})
    argv = proc.command(settings, "/bin/dbt", ["build"], tmp_path, select=["tag:a", "b+"])
    assert argv[:2] == ["/bin/dbt", "build"]
    assert argv[argv.index("--target-path") + 1] == str(tmp_path / "target")
    assert argv[argv.index("--vars") + 1] == '{"source_schema":"raw"}'
    assert argv[-3:] == ["--select", "tag:a", "b+"]
    with pytest.raises(OrchestratorError, match="`--profiles-dir` is not a dbt selector"):
        proc.command(settings, "/bin/dbt", ["build"], tmp_path, select=["--profiles-dir"])


def test_the_environment_is_built_from_nothing_and_keeps_dbt_off_the_network(tmp_path: Path) -> None:
    settings = _settings(env={"DBT_PG_SCHEMA": "a", "DBT_SEND_ANONYMOUS_USAGE_STATS": "true"})
    env = proc.environment(settings, "/opt/dbt/bin/dbt", tmp_path, {"DBT_ENV_SECRET_PW": "s3"})
    assert env["PATH"].startswith("/opt/dbt/bin:")
    assert (env["DBT_PG_SCHEMA"], env["DBT_ENV_SECRET_PW"]) == ("a", "s3")
    assert (env["DBT_SEND_ANONYMOUS_USAGE_STATS"], env["DBT_VERSION_CHECK"]) == ("false", "false")
    assert set(env) == {
        "PATH",
        "HOME",
        "DBT_PG_SCHEMA",
        "DBT_ENV_SECRET_PW",
        *("DBT_SEND_ANONYMOUS_USAGE_STATS", "DBT_VERSION_CHECK", "DBT_USE_COLORS", "DBT_USE_COLORS_FILE"),
        *("DBT_PARTIAL_PARSE", "LANG"),
    }


def test_the_scrubber_replaces_every_secret_even_one_inside_another() -> None:
    scrub = proc.scrubber(["abc", "xxabcxx", ""])
    assert scrub("pw=xxabcxx and abc") == "pw=[redacted] and [redacted]"


@pytest.mark.parametrize(
    ("secret_env", "message"),
    [
        ({"DBT_ENV_SECRET_PW": "hunter2-inline"}, "secret://NAME"),
        ({"PG_PASSWORD": "secret://pg"}, "must start with `DBT_ENV_SECRET_`"),
        ({"dbt_env_secret_x": "secret://pg"}, "must match"),
    ],
)
def test_secret_environment_must_be_vault_references_under_names_dbt_scrubs(
    secret_env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        _settings(secret_env=secret_env)
    assert "hunter2-inline" not in str(caught.value)
