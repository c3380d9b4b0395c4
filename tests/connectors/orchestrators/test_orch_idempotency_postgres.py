"""Rerun idempotency keys on the real PostgreSQL: a key one replica launched holds on another."""

from __future__ import annotations

from pathlib import Path

from mcp_gateway.app.wiring import open_idempotency_store
from mcp_gateway.config import Settings
from mcp_gateway.connectors.orchestrators.idempotency import (
    IdempotencyStore,
    PostgresIdempotencyStore,
    rerun_key,
)

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


def test_a_key_taken_by_one_instance_blocks_the_other(pg_schema: str) -> None:
    replica_a = PostgresIdempotencyStore(DSN, pg_schema, clock=lambda: 5000.0)
    replica_b = PostgresIdempotencyStore(DSN, pg_schema, clock=lambda: 5000.0)
    try:
        key = rerun_key("nightly", "full", "INC-1 broken load")
        assert replica_b.get(key) is None
        first = replica_a.record(key, "nightly", "full", "run-a")
        seen = replica_b.get(key)
        assert seen == first and seen.live(5000.0, 3600)
        # B racing with a run of its own for the same generation keeps A's (the first run wins) ...
        assert replica_b.record(key, "nightly", "full", "run-b").run_id == "run-a"
        # ... and once the window is over, the next generation replaces it everywhere.
        later = replica_b.record(key, "nightly", "full", "run-c", now=9000.0, generation=1)
        assert replica_a.get(key) == later and later.launch_key != first.launch_key
    finally:
        replica_a.close()
        replica_b.close()


def test_the_shared_store_setting_puts_the_keys_on_postgres(tmp_path: Path, pg_schema: str) -> None:
    shared = Settings.model_validate({"data_dir": str(tmp_path), "store": {"url": DSN, "schema": pg_schema}})
    alone = Settings.model_validate({"data_dir": str(tmp_path)})
    on_postgres, on_sqlite = open_idempotency_store(shared), open_idempotency_store(alone)
    try:
        assert isinstance(on_postgres, PostgresIdempotencyStore)
        assert isinstance(on_sqlite, IdempotencyStore)
    finally:
        on_postgres.close()
        on_sqlite.close()
