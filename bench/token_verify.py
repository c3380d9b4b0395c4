"""Agent-token verification latency: SQLite vs PostgreSQL, with and without the < 1 s positive cache.

Each case issues one token, then times ``verify`` calls one at a time (bounded by count and time) and
prints p50/p99 in µs. The PostgreSQL cases use a schema of their own (dropped afterwards) on
``--dsn`` (default: the local test database).

Run: ``python bench/token_verify.py [--calls 5000] [--dsn DSN]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

from mcp_gateway.identity.agents import AgentTokens, PostgresAgentStore, SQLiteAgentStore

DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


def measure(verify: Callable[[], object], calls: int, budget: float) -> tuple[float, float, int]:
    """(p50 µs, p99 µs, calls made) of ``verify``, at most ``calls`` times or ``budget`` seconds."""
    for _ in range(50):
        verify()  # warm up (connection, statement cache, the token cache)
    samples: list[float] = []
    deadline = time.monotonic() + budget
    while len(samples) < calls and time.monotonic() < deadline:
        start = time.perf_counter()
        verify()
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1], len(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per case at most")
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    args = parser.parse_args()
    schema = f"bench_tokens_{uuid.uuid4().hex[:10]}"
    stores: list[tuple[str, AgentTokens]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            stores.append(("sqlite", SQLiteAgentStore(Path(tmp) / "agents.db")))
            stores.append(("postgres, no cache", PostgresAgentStore(args.dsn, schema, cache_seconds=0.0)))
            stores.append(("postgres, 0.5 s cache (default)", PostgresAgentStore(args.dsn, schema)))
            print("| store | p50 µs | p99 µs | calls |\n|---|---:|---:|---:|")
            for label, store in stores:
                _, token = store.create("bench-agent")
                p50, p99, count = measure(lambda s=store, t=token: s.verify(t), args.calls, args.budget)
                print(f"| {label} | {p50:.1f} | {p99:.1f} | {count} |")
        finally:
            for _, store in stores:
                store.close()
            with psycopg.connect(args.dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    main()
