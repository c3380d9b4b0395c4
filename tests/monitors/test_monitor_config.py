"""The ``monitors:`` section: a monitor names a configured warehouse and job, and real checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_gateway.config import load_settings
from mcp_gateway.errors import ConfigError

BASE = """\
warehouses:
  lake: {kind: iceberg, catalog_uri: "sqlite:///c.db", warehouse: w}
orchestrators:
  pf: {kind: prefect, url: "http://pf.test/api"}
jobs:
  nightly: {orchestrator: pf, id: "flow/nightly"}
monitors:
"""


def load(tmp_path: Path, monitors: str) -> object:
    path = tmp_path / "gateway.yaml"
    path.write_text(BASE + monitors)
    return load_settings(path)


def test_a_monitor_on_a_configured_table_and_job_loads(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        "  revenue:\n    table: lake.finance.revenue\n    job: nightly\n    every_seconds: 60\n"
        "    checks: [{metric: named, name: non_usd_rows, max: 0}, {metric: row_count, min: 1}]\n",
    )
    monitor = settings.monitors["revenue"]  # type: ignore[attr-defined]
    assert monitor.job == "nightly" and monitor.every_seconds == 60
    assert [c.label() for c in monitor.checks] == ["named(non_usd_rows)", "row_count"]


@pytest.mark.parametrize(
    ("monitors", "expected"),
    [
        (
            "  m:\n    table: dwh.s.t\n    checks: [{metric: row_count, min: 1}]\n",
            "in no configured warehouse",
        ),
        (
            "  m:\n    table: lake.s.t\n    job: weekly\n    checks: [{metric: row_count, min: 1}]\n",
            "job `weekly`",
        ),
        ("  m:\n    table: lake.s.t\n    checks: []\n", "checks"),
        ("  m:\n    table: lake.s.t\n    checks: [{metric: null_rate, max: 0}]\n", "needs `column`"),
        (
            "  m:\n    table: lake.s.t\n    every_seconds: 0\n    checks: [{metric: row_count}]\n",
            "every_seconds",
        ),
        ("  Bad Name:\n    table: lake.s.t\n    checks: [{metric: row_count}]\n", "must match"),
    ],
)
def test_a_wrong_monitor_is_a_clear_config_error(tmp_path: Path, monitors: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load(tmp_path, monitors)
