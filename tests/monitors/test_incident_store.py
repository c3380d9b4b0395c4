"""The incident store on SQLite and PostgreSQL: one open incident per monitor, across replicas too."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import PG_DSN
from mcp_gateway.incidents.model import Fix
from mcp_gateway.incidents.store import IncidentStore, new_id, open_incident_store

FAILING = [{"check": "row_count", "value": 0, "min": 1.0, "max": None, "passed": False}]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], IncidentStore]]:
    """Opens the same store again on each call (another replica)."""
    opened: list[IncidentStore] = []
    schema = request.getfixturevalue("pg_schema") if request.param == "postgres" else ""

    def again() -> IncidentStore:
        if request.param == "postgres":
            store = open_incident_store(dsn=PG_DSN, schema=schema)
        else:
            store = open_incident_store(path=tmp_path / "incidents.db")
        opened.append(store)
        return store

    yield again
    for store in opened:
        store.close()


def test_two_replicas_failing_together_share_one_open_incident(
    open_store: Callable[[], IncidentStore],
) -> None:
    a, b = open_store(), open_store()
    first, new_a = a.raise_or_add(
        new_id(), monitor="m", table="lake.s.t", job="j", failing=FAILING, opened_seq=1, now=10.0
    )
    second, new_b = b.raise_or_add(
        new_id(), monitor="m", table="lake.s.t", job="j", failing=FAILING, opened_seq=2, now=11.0
    )
    assert new_a and not new_b
    assert second.id == first.id and second.occurrences == 2 and second.updated_at == 11.0
    assert second.opened_seq == 1


def test_a_recovered_incident_keeps_its_fixes_and_a_new_failure_opens_a_new_one(
    open_store: Callable[[], IncidentStore],
) -> None:
    store = open_store()
    first, _ = store.raise_or_add(
        new_id(), monitor="m", table="lake.s.t", job=None, failing=FAILING, opened_seq=1, now=1.0
    )
    closed = store.recover(first.id, [Fix("c1", "healer", "data.switch_in", 7)], now=5.0)
    assert closed.status == "recovered" and closed.closed_at == 5.0
    assert closed.fixes == (Fix("c1", "healer", "data.switch_in", 7),)
    assert store.open_of("m") is None
    again, new = open_store().raise_or_add(
        new_id(), monitor="m", table="lake.s.t", job=None, failing=FAILING, opened_seq=9, now=6.0
    )
    assert new and again.id != first.id
    assert [i.id for i in store.history(table="lake.s.t")] == [again.id, first.id]
    assert store.get(first.id) == closed


def test_replicas_racing_to_open_end_with_one_incident(open_store: Callable[[], IncidentStore]) -> None:
    import threading

    stores = [open_store() for _ in range(6)]
    start = threading.Barrier(len(stores))
    results: list[tuple[str, bool]] = []

    def fail(store: IncidentStore, seq: int) -> None:
        start.wait(timeout=10)
        incident, new = store.raise_or_add(
            new_id(),
            monitor="race",
            table="lake.s.t",
            job=None,
            failing=FAILING,
            opened_seq=seq,
            now=float(seq),
        )
        results.append((incident.id, new))

    threads = [threading.Thread(target=fail, args=(s, n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == len(stores)
    assert len({incident_id for incident_id, _ in results}) == 1
    assert sum(new for _, new in results) == 1
    assert stores[0].open_of("race").occurrences == len(stores)  # type: ignore[union-attr]
