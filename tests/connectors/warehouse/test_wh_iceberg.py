"""Iceberg adapter details: SQL null semantics on branch writes, refs, tables without snapshots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from mcp_gateway.connectors.warehouse.base import Predicate, WarehouseError
from mcp_gateway.connectors.warehouse.iceberg import IcebergWarehouse

SCHEMA = pa.schema([("id", pa.int64()), ("cur", pa.string())])


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[IcebergWarehouse]:
    wh = IcebergWarehouse.connect(f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "w").as_uri(), "unit")
    catalog = wh._catalog  # the test seeds through the same catalog the adapter uses
    catalog.create_namespace("s")
    table = catalog.create_table(("s", "t"), schema=SCHEMA)
    table.append(pa.table({"id": [1, 2, 3, 4], "cur": ["USD", None, "JPY", None]}, schema=SCHEMA))
    catalog.create_table(("s", "empty"), schema=SCHEMA)
    yield wh
    wh.close()


def _branch_rows(wh: IcebergWarehouse, branch: str) -> list[dict[str, Any]]:
    table = wh._catalog.load_table(("s", "t"))
    rows = table.scan(snapshot_id=table.metadata.refs[branch].snapshot_id).to_arrow().to_pylist()
    return sorted(rows, key=lambda r: r["id"])


@pytest.mark.parametrize(
    ("where", "updated_ids"),
    [
        (Predicate(column="cur", op="!=", value="USD"), [3]),
        (Predicate(column="cur", op="not_null"), [1, 3]),
        (Predicate(column="cur", op="is_null"), [2, 4]),
        (Predicate(column="cur", op="in", value=["JPY", "GBP"]), [3]),
    ],
)
def test_branch_updates_follow_sql_null_semantics_and_keep_every_other_row(
    lake: IcebergWarehouse, where: Predicate, updated_ids: list[int]
) -> None:
    main_before = lake.current_snapshot("s.t")
    lake.clone("s.t", "b")
    assert lake.update_rows("s.t", "b", [where], {"cur": "X"}, 10) == len(updated_ids)
    rows = _branch_rows(lake, "b")
    assert [r["id"] for r in rows] == [1, 2, 3, 4]
    assert [r["id"] for r in rows if r["cur"] == "X"] == updated_ids
    assert lake.current_snapshot("s.t") == main_before


def test_switching_in_an_unchanged_branch_changes_nothing(lake: IcebergWarehouse) -> None:
    head = lake.clone("s.t", "same")
    assert lake.switch_in("s.t", "same").after == head == lake.current_snapshot("s.t")


def test_cloning_onto_an_existing_branch_or_a_table_without_snapshots_is_refused(
    lake: IcebergWarehouse,
) -> None:
    lake.clone("s.t", "b")
    with pytest.raises(WarehouseError, match="already has a branch `b`"):
        lake.clone("s.t", "b")
    with pytest.raises(WarehouseError, match="has no snapshot yet"):
        lake.clone("s.empty", "b")


def test_rollback_refuses_a_snapshot_from_a_branch_that_main_never_had(lake: IcebergWarehouse) -> None:
    lake.clone("s.t", "side")
    lake.delete_rows("s.t", "side", [Predicate(column="id", op="=", value=1)], 10)
    side_head = str(lake._catalog.load_table(("s", "t")).metadata.refs["side"].snapshot_id)
    before = lake.current_snapshot("s.t")
    with pytest.raises(WarehouseError, match="not in the history"):
        lake.rollback("s.t", side_head)
    assert lake.current_snapshot("s.t") == before
