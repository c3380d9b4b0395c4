"""Audit search over a million records: the first page of each typical console query, SQLite and PostgreSQL.

The store is filled with a realistic mix of valid chained records (``chain_encoded``, the function the
stores chain with), inserted in bulk: rows straight into the ``audit`` table in one transaction per
50,000 (SQLite ``executemany``, PostgreSQL ``COPY``), with the search indexes already in place, as a
gateway's store has them. No seals are written (search does not read them). The mix:

- calls over 30 days ending now, one every ~2.6 s, by 60 agents (a few busy, most quiet) over 16 tools
  in 6 namespaces;
- 89% allowed calls: an ``intent`` record and an ``outcome`` (95% ``ok``, 5% ``error``);
- 8% denied calls: one ``denied`` record with reasons (a constraint, a missing grant, a quota; 1 in
  1,000 of them "change freeze window"); 3% approvals, auth failures, admin and policy reload records.

Then, for each query, one warm-up and ``--runs`` timed first pages (50 records, newest first, through
``sink.search``: SQL, fetch and decoding into records); the table gives the median and the maximum.

``--verify`` then runs ``verify_with_progress`` (the console's "verify now") over each whole store
without keys (the chain alone: the bulk rows carry no seals or checkpoints) and reports its time and the
growth of the process's peak RSS.

Run: ``python bench/audit_search.py [--records 1000000] [--runs 7] [--backends sqlite,postgres]
[--dsn "host=127.0.0.1 port=5432 user=postgres dbname=test"] [--verify] [--keep DIR]``.
Writes ``bench/results/audit-search-<timestamp>.json`` (+ ``.md``) and prints Markdown.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import machine_facts, md_table, timestamp, write_results

DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
DAYS = 30
TOOLS = [
    "data.query",
    "data.export",
    "data.describe",
    "data.list_tables",
    "ops.rerun_job",
    "ops.status",
    "sf.query",
    "sf.update",
    "sf.create",
    "wh.clone",
    "wh.swap",
    "wh.quality",
    "up.echo",
    "time.get_current_time",
    "gateway.echo",
    "files.read",
]
TOOL_WEIGHTS = [30, 6, 8, 5, 3, 4, 10, 3, 2, 2, 1, 2, 10, 6, 4, 4]
AGENTS = [f"agent-{i:02d}" for i in range(60)]
AGENT_WEIGHTS = [40 if i < 5 else 6 if i < 30 else 0.5 for i in range(60)]
REASONS = [
    "argument `limit` exceeds the maximum 1000",
    "no grant for tool `{tool}`",
    "quota exceeded: 500 calls per hour",
    "argument `table` is not one of the allowed values",
    "a deny rule matched: `no-prod-writes`",
]


def events(n: int, seed: int = 7) -> Iterator[tuple[float, list[Any]]]:
    """``(ts, events of one call)`` until ``n`` records, oldest first."""
    from mcp_gateway.types import AuditEvent

    rng = random.Random(seed)
    start = time.time() - DAYS * 86400
    step = DAYS * 86400 / (n / 1.9)
    ts, made = start, 0
    while made < n:
        ts += rng.expovariate(1 / step)
        agent = rng.choices(AGENTS, AGENT_WEIGHTS)[0]
        tool = rng.choices(TOOLS, TOOL_WEIGHTS)[0]
        call_id = f"{rng.getrandbits(96):024x}"
        roll = rng.random()
        args = {"sql": f"select * from orders where id = {rng.randint(1, 10**6)}", "limit": 100}  # noqa: S608 - an argument value, not a query
        allow = {"rule_ids": [f"grant-{tool}"], "token_id": f"tok-{agent}"}
        if roll < 0.89:
            status = "ok" if rng.random() < 0.95 else "error"
            outcome = {
                "latency_ms": round(rng.uniform(2, 900), 1),
                "result_digest": f"{rng.getrandbits(64):016x}",
            }
            if status == "error":
                outcome["error"] = "upstream answered 503"
            batch = [
                AuditEvent(
                    kind="intent",
                    call_id=call_id,
                    agent=agent,
                    tool=tool,
                    decision="allow",
                    args=args,
                    detail=allow,
                ),
                AuditEvent(
                    kind="outcome",
                    call_id=call_id,
                    agent=agent,
                    tool=tool,
                    decision="allow",
                    status=status,
                    detail=outcome,
                ),
            ]
        elif roll < 0.97:
            reason = rng.choice(REASONS).format(tool=tool)
            if rng.random() < 0.001:
                reason = "change freeze window: writes are blocked until monday"
            batch = [
                AuditEvent(
                    kind="denied",
                    call_id=call_id,
                    agent=agent,
                    tool=tool,
                    decision="deny",
                    status="denied",
                    args=args,
                    detail={"reasons": [reason]},
                )
            ]
        elif roll < 0.985:
            batch = [
                AuditEvent(
                    kind="approval",
                    call_id=call_id,
                    agent=agent,
                    tool=tool,
                    decision="pending",
                    status="parked",
                    detail={"why": "policy asks for approval"},
                )
            ]
        elif roll < 0.998:
            batch = [
                AuditEvent(
                    kind="auth_failure",
                    decision="deny",
                    status="unauthenticated",
                    detail={"reason": "unknown token", "source": "10.0.0.7"},
                )
            ]
        elif roll < 0.9995:
            batch = [
                AuditEvent(
                    kind="admin",
                    agent="admin",
                    decision="allow",
                    status="ok",
                    detail={"action": "token_revoke"},
                )
            ]
        else:
            batch = [
                AuditEvent(
                    kind="policy_reload",
                    status="ok",
                    detail={"path": "/etc/mcp/policies", "version": f"{rng.getrandbits(48):012x}"},
                )
            ]
        made += len(batch)
        yield ts, batch


def chained_rows(n: int) -> Iterator[list[tuple[Any, ...]]]:
    """Rows of ``rows.COLUMNS`` for ``n`` (or a few more) chained records, 50,000 at a time."""
    from mcp_gateway.audit.record import chain_encoded
    from mcp_gateway.audit.rows import to_row

    prev: tuple[int, str] | None = None
    rows: list[tuple[Any, ...]] = []
    for ts, batch in events(n):
        encoded = chain_encoded(prev, batch, ts)
        rows.extend(to_row(r, (a, d)) for r, a, d in encoded)
        last = encoded[-1][0]
        prev = (last.seq, last.hash)
        if len(rows) >= 50_000:
            yield rows
            rows = []
    if rows:
        yield rows


def fill_sqlite(path: Path, n: int) -> tuple[Any, float]:
    from mcp_gateway.audit.rows import COLUMNS
    from mcp_gateway.audit.sqlite import SQLiteAuditSink

    sink = SQLiteAuditSink(path)
    conn = sink._conn  # the bench's own store: bulk rows in, bypassing the per-batch append
    started = time.perf_counter()
    insert = f"INSERT INTO audit ({COLUMNS}) VALUES ({', '.join('?' * 12)})"  # noqa: S608 - constant columns
    for rows in chained_rows(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, rows)
        conn.execute("COMMIT")
    conn.execute("ANALYZE")
    return sink, time.perf_counter() - started


def fill_postgres(dsn: str, schema: str, n: int) -> tuple[Any, float]:
    import psycopg
    from psycopg import sql

    from mcp_gateway.audit.postgres import PostgresAuditSink
    from mcp_gateway.audit.rows import COLUMN_NAMES

    sink = PostgresAuditSink(dsn, schema=schema)
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(schema, "audit"), sql.SQL(", ").join(map(sql.Identifier, COLUMN_NAMES))
        )
        for rows in chained_rows(n):
            with conn.transaction(), conn.cursor() as cur, cur.copy(copy) as writer:
                for row in rows:
                    writer.write_row(row)
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(schema, "audit")))
    return sink, time.perf_counter() - started


def queries(head_seq: int, newest_ts: float) -> list[tuple[str, Any]]:
    from mcp_gateway.audit.search import AuditSearch

    ten_days_ago = newest_ts - 10 * 86400
    return [
        ("no filter", AuditSearch()),
        ("agent (busy)", AuditSearch(agent="agent-01")),
        ("agent (quiet)", AuditSearch(agent="agent-59")),
        ("tool exact", AuditSearch(tool="sf.update")),
        ("tool glob `data.*`", AuditSearch(tool="data.*")),
        ("tool glob `*.rerun_job`", AuditSearch(tool="*.rerun_job")),
        ("tool glob `wh.[cs]*`", AuditSearch(tool="wh.[cs]*")),
        ("decision=deny", AuditSearch(decision="deny")),
        ("status=error", AuditSearch(status="error")),
        ("kind=policy_reload (rare)", AuditSearch(kind="policy_reload")),
        ("time range: last hour", AuditSearch(since=newest_ts - 3600)),
        ("time range: 1 h, 10 days ago", AuditSearch(since=ten_days_ago, until=ten_days_ago + 3600)),
        ("free text `quota` (common)", AuditSearch(text="quota")),
        ("free text `freeze window` (rare)", AuditSearch(text="FREEZE WINDOW")),
        ("agent + decision=deny", AuditSearch(agent="agent-07", decision="deny")),
        (
            "agent + tool glob + deny + 7 days",
            AuditSearch(agent="agent-02", tool="data.*", decision="deny", since=newest_ts - 7 * 86400),
        ),
        ("page 200 (keyset, no filter)", AuditSearch(before_seq=max(1, head_seq - 199 * 50))),
    ]


def time_queries(sink: Any, runs: int) -> list[dict[str, Any]]:
    head = sink.head()
    newest = sink.records(after_seq=head[0] - 1)[0].ts
    out = []
    for name, query in queries(head[0], newest):
        sink.search(query)  # warm-up: plan, caches
        times, count = [], 0
        for _ in range(runs):
            started = time.perf_counter()
            page = sink.search(query)
            times.append((time.perf_counter() - started) * 1000)
            count = len(page.records)
        out.append(
            {"query": name, "median_ms": statistics.median(times), "max_ms": max(times), "records": count}
        )
        print(
            f"  {name}: median {statistics.median(times):.2f} ms, max {max(times):.2f} ms ({count} records)",
            file=sys.stderr,
        )
    return out


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])  # KiB
    return 0


def time_verify(sink: Any) -> dict[str, Any]:
    """``verify_with_progress`` over the whole store (no keys: the chain alone), as the console runs it."""
    import asyncio

    from mcp_gateway.audit.health import verify_with_progress

    async def run() -> dict[str, Any]:
        steps, first_step = 0, None
        started = time.perf_counter()
        async for step in verify_with_progress(sink, {}):
            steps += 1
            first_step = first_step or time.perf_counter() - started
            if step.outcome is not None:
                return {
                    "ok": step.outcome.ok,
                    "checked": step.outcome.assessment.checkpoints.checked,
                    "seconds": round(time.perf_counter() - started, 1),
                    "progress_steps": steps,
                    "first_step_seconds": round(first_step, 2),
                }
        raise RuntimeError("verify_with_progress ended without an outcome")

    rss = _vm("VmRSS")
    result = asyncio.run(run())
    result["peak_rss_growth_mib"] = round((_vm("VmHWM") - rss) / 1024)
    print(f"  verify: {result}", file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--verify", action="store_true", help="also time verify_with_progress (the chain)")
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep the SQLite file in this dir (and the PG schema)"
    )
    args = parser.parse_args()
    stamp = timestamp()
    data: dict[str, Any] = {
        "kind": "audit-search",
        "run_id": stamp,
        "records": args.records,
        "runs": args.runs,
        "machine": machine_facts(),
        "backends": {},
    }
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory(prefix="audit-search-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for backend in backends:
            print(f"{backend}: filling {args.records} records...", file=sys.stderr)
            schema = f"bench_audit_search_{uuid.uuid4().hex[:8]}"
            if backend == "sqlite":
                sink, fill_s = fill_sqlite(folder / f"audit-{stamp}.db", args.records)
            else:
                sink, fill_s = fill_postgres(args.dsn, schema, args.records)
            head = sink.head()
            print(f"  filled {head[0]} records in {fill_s:.1f} s", file=sys.stderr)
            try:
                data["backends"][backend] = {
                    "filled": head[0],
                    "fill_seconds": round(fill_s, 1),
                    "queries": time_queries(sink, args.runs),
                }
                if args.verify:
                    data["backends"][backend]["verify"] = time_verify(sink)
            finally:
                sink.close()
                if backend == "postgres" and args.keep is None:
                    import psycopg
                    from psycopg import sql

                    with psycopg.connect(args.dsn, autocommit=True) as conn:
                        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    names = [q["query"] for q in data["backends"][backends[0]]["queries"]]
    rows = []
    for i, name in enumerate(names):
        row = [name]
        for backend in backends:
            q = data["backends"][backend]["queries"][i]
            row.append(f"{q['median_ms']:.1f} ({q['max_ms']:.1f})")
        rows.append(row)
    header = ["first page (50), newest first", *[f"{b}: median (max) ms" for b in backends]]
    fills = ", ".join(
        f"{b} {data['backends'][b]['filled']:,} records filled in {data['backends'][b]['fill_seconds']} s"
        for b in backends
    )
    title = f"# Audit search, {args.records:,} records ({stamp})\n\n"
    markdown = title + f"{fills}; {args.runs} runs per query after one warm-up.\n\n" + md_table(header, rows)
    for b in backends:
        if "verify" in data["backends"][b]:
            v = data["backends"][b]["verify"]
            markdown += (
                f"\n{b}: verify_with_progress over {v['checked']:,} records: {v['seconds']} s,"
                f" {v['progress_steps']} progress steps, peak RSS +{v['peak_rss_growth_mib']} MiB\n"
            )
    path = write_results("audit-search", data, markdown, stamp)
    print(markdown)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
