"""``mcp-gateway incidents list`` / ``show``: the monitors' incidents from the real store (SQLite in
the data dir, or PostgreSQL through ``store:``), read only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import PG_DSN
from mcp_gateway.cli import app
from mcp_gateway.incidents.model import Fix
from mcp_gateway.incidents.store import IncidentStore, open_incident_store

T0 = 1_764_900_000.0  # 2025-12-05T02:00:00Z
FAILING = [{"check": "null_rate(cur)", "value": 0.25, "min": None, "max": 0, "passed": False}]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def fill(store: IncidentStore) -> None:
    """Two incidents of `revenue_nulls` (one recovered by a switch-in, one open) and one of `orders`."""
    store.raise_or_add(
        "inc_00000000000000a1", monitor="revenue_nulls", table="lake.s.revenue", job="nightly",
        failing=FAILING, opened_seq=10, now=T0,
    )  # fmt: skip
    store.raise_or_add(
        "inc_00000000000000a2",
        monitor="revenue_nulls",
        table="lake.s.revenue",
        job="nightly",
        failing=FAILING,
        opened_seq=11,
        now=T0 + 60,
    )  # fmt: skip  (a second failing run: adds to the open one)
    fix = Fix(call_id="call-7", agent="healer", tool="data.switch_in", audit_seq=42)
    store.recover("inc_00000000000000a1", [fix], now=T0 + 600)
    store.raise_or_add(
        "inc_00000000000000b1", monitor="orders_rows", table="lake.s.orders", job=None,
        failing=[{"check": "row_count", "value": 0, "min": 1, "max": None, "passed": False}],
        opened_seq=20, now=T0 + 700,
    )  # fmt: skip
    store.raise_or_add(
        "inc_00000000000000a3", monitor="revenue_nulls", table="lake.s.revenue", job="nightly",
        failing=FAILING, opened_seq=30, now=T0 + 800,
    )  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text("version: 1\nagents: {}\n")
    settings: dict[str, object] = {"data_dir": "data", "policies": "policies"}
    if request.param == "postgres":
        schema = request.getfixturevalue("pg_schema")
        settings["store"] = {"url": PG_DSN, "schema": schema}
        store = open_incident_store(dsn=PG_DSN, schema=schema)
    else:
        (tmp_path / "data").mkdir()
        store = open_incident_store(path=tmp_path / "data" / "incidents.db")
    try:
        fill(store)
    finally:
        store.close()
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(settings))
    yield tmp_path / "gateway.yaml"


def test_incidents_list_shows_the_newest_first_and_filters_by_table_job_and_open(config: Path) -> None:
    code, out, err = run("incidents", "list", "-c", str(config))
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [
        "inc_00000000000000a3",
        "inc_00000000000000b1",
        "inc_00000000000000a1",
    ]
    recovered = lines[2].split("\t")
    assert recovered[1:5] == ["recovered", "revenue_nulls", "lake.s.revenue", "job nightly"]
    assert recovered[5:] == [
        "opened 2025-12-05T02:00:00+00:00",
        "closed 2025-12-05T02:10:00+00:00",
        "runs 2",
        "failing null_rate(cur)",
        "fixes 1",
    ]
    code, out, _ = run("incidents", "list", "-c", str(config), "--table", "lake.s.revenue", "--open")
    assert [line.split("\t")[0] for line in out.splitlines()] == ["inc_00000000000000a3"]
    code, out, _ = run("incidents", "list", "-c", str(config), "--job", "nightly", "--json", "--limit", "1")
    (row,) = map(json.loads, out.splitlines())
    assert (
        row["id"] == "inc_00000000000000a3"
        and row["status"] == "open"
        and row["uri"].startswith("incident://")
    )
    code, _, err = run("incidents", "list", "-c", str(config), "--table", "x", "--job", "y")
    assert code == 2 and "not both" in err


def test_incidents_show_gives_the_failing_checks_and_the_calls_that_fixed_it(config: Path) -> None:
    code, out, err = run("incidents", "show", "incident://inc_00000000000000a1", "-c", str(config))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("inc_00000000000000a1\trecovered\trevenue_nulls")
    assert lines[1] == "  failing\tnull_rate(cur)\tvalue 0.25\tmin None, max 0"
    assert lines[2] == "  fixed by\tdata.switch_in\tagent healer\tcall call-7\taudit seq 42"
    code, out, _ = run("incidents", "show", "inc_00000000000000a1", "-c", str(config), "--json")
    assert json.loads(out)["resolution"] == [
        {"call_id": "call-7", "agent": "healer", "tool": "data.switch_in", "audit_seq": 42}
    ]
    code, _, err = run("incidents", "show", "inc_nope", "-c", str(config))
    assert code == 1 and err.strip() == "error: no incident `inc_nope`"


def test_without_an_incident_store_there_is_nothing_to_list_and_none_is_created(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text("data_dir: data\npolicies: policies\n")
    (tmp_path / "policies").mkdir()
    assert run("incidents", "list", "-c", str(tmp_path / "gateway.yaml")) == (0, "", "")
    code, _, err = run("incidents", "show", "inc_00000000000000a1", "-c", str(tmp_path / "gateway.yaml"))
    assert code == 1 and "no incident" in err
    assert not (tmp_path / "data" / "incidents.db").exists()
