"""The pin store on SQLite and on the real PostgreSQL: one behaviour, two databases, shared by instances."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcp_gateway.app.wiring import open_pin_store
from mcp_gateway.cli import app
from mcp_gateway.config import Settings
from mcp_gateway.errors import PinError
from mcp_gateway.pins.store import PostgresPinStore, SQLitePinStore, SQLPinStore

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(
    request: pytest.FixtureRequest, tmp_path: Path, pg_schema: str
) -> Iterator[Callable[[], SQLPinStore]]:
    """Opens pin stores sharing one database (a file, or a PostgreSQL schema)."""
    opened: list[SQLPinStore] = []

    def make() -> SQLPinStore:
        store: SQLPinStore
        if request.param == "sqlite":
            store = SQLitePinStore(tmp_path / "pins.db", clock=lambda: 1000.0)
        else:
            store = PostgresPinStore(DSN, pg_schema, clock=lambda: 1000.0)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_a_changed_definition_is_presented_then_approved_once(open_store: Callable[[], SQLPinStore]) -> None:
    store = open_store()
    store.pin("up", "read", "a" * 64, '{"v": 1}')
    store.mark_listed("up", "tool")
    store.mark_listed("up", "tool")  # twice is fine
    assert store.was_listed("up", "tool") and not store.was_listed("up", "prompt")
    before = store.generation()
    store.present("up", "read", "b" * 64, '{"v": 2}')
    pin = store.get("up", "read")
    assert pin is not None and pin.status == "changed" and pin.hash == "a" * 64
    with pytest.raises(PinError, match="review it again"):
        store.approve("up", "read", expected_hash="c" * 12)
    approved = store.approve("up", "read", expected_hash="b" * 12)
    assert approved.hash == "b" * 64
    assert store.get("up", "read").status == "pinned"  # type: ignore[union-attr]
    assert store.generation() > before
    with pytest.raises(PinError, match="no changed definition"):
        store.approve("up", "read")
    with pytest.raises(PinError, match="no pinned"):
        store.approve("up", "missing")
    store.present("up", "new", "d" * 64, "{}", kind="prompt")
    assert [(p.kind, p.name, p.status) for p in store.all()] == [
        ("prompt", "prompt:up.new", "new"),
        ("tool", "up.read", "pinned"),
    ]


def test_an_approval_by_one_instance_is_seen_by_another(open_store: Callable[[], SQLPinStore]) -> None:
    gateway, admin = open_store(), open_store()
    gateway.pin("up", "read", "a" * 64, "{}")
    gateway.present("up", "read", "b" * 64, "{}")
    seen = gateway.generation()
    admin.approve("up", "read")
    assert gateway.generation() != seen
    assert gateway.get("up", "read").hash == "b" * 64  # type: ignore[union-attr]


def test_a_pin_approved_through_the_cli_is_seen_by_a_running_gateways_store(
    tmp_path: Path, pg_schema: str
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"data_dir: data\nstore: {{url: '{DSN}', schema: {pg_schema}}}\n")
    settings = Settings.model_validate(
        {"data_dir": str(tmp_path / "data"), "store": {"url": DSN, "schema": pg_schema}}
    )
    gateway = open_pin_store(settings)
    try:
        assert isinstance(gateway, PostgresPinStore)
        gateway.pin("up", "read", "a" * 64, "{}")
        gateway.present("up", "read", "b" * 64, "{}")
        seen = gateway.generation()
        result = CliRunner().invoke(app, ["upstreams", "approve", "up.read", "-c", str(config)])
        assert result.exit_code == 0, result.output
        assert gateway.generation() != seen
        assert gateway.get("up", "read").hash == "b" * 64  # type: ignore[union-attr]
        assert not (tmp_path / "data" / "pins.db").exists()
    finally:
        gateway.close()


def test_listing_pins_creates_no_store(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("data_dir: data\n")
    result = CliRunner().invoke(app, ["upstreams", "list", "-c", str(config)])
    assert result.exit_code == 0 and "no pins yet" in result.output
    assert not (tmp_path / "data" / "pins.db").exists()
