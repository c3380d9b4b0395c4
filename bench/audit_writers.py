"""Durable audit appends/s with several writer processes on one PostgreSQL audit chain (replicas).

Each process is what a gateway replica holds: its own ``AuditLog`` (group commit) over its own
``PostgresAuditSink``, sealing every batch with the one seal key all replicas share (from the vault),
on one shared schema. Every batch is one transaction that takes the chain's advisory lock, reads the
head, inserts the chained records and their seal, and commits with ``synchronous_commit = on``: the
lock is what keeps one chain across replicas, and it stays. Inside a process, ``--concurrency``
coroutines append one intent-sized event at a time and wait for it to be durable, as concurrent
calls do. All processes start together (a barrier), append for ``--seconds``, and report.

After each run the whole chain is read back and verified (``audit.verify``: every hash and link) and
every seal checked, so the figure counts only appends that ended in one valid chain.

Run: ``python bench/audit_writers.py [--processes 3] [--concurrency 32,64] [--seconds 5] [--runs 3]
[--dsn "host=127.0.0.1 port=5432 user=postgres dbname=test"]``.
Writes ``bench/results/audit-writers-<timestamp>.json`` (+ ``.md``) and prints Markdown; the figure is
for each concurrency, the median over the runs of the total appends/s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import queue
import secrets
import statistics
import time
import uuid
from typing import Any

from common import machine_facts, md_table, percentile, timestamp, wait_for_quiet, write_results

DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


def _event(process: int, i: int) -> Any:
    from mcp_gateway.types import AuditEvent

    return AuditEvent(
        kind="intent",
        call_id=f"{process:08x}{i:024x}",
        agent="bench",
        tool="up.echo",
        decision="allow",
        args={"text": "hello world " * 3},
        detail={"rule_ids": ["bench-echo"], "token_id": "abcdefghijkl"},
    )


def _writer_process(
    index: int,
    dsn: str,
    schema: str,
    seal_key: bytes,
    concurrency: int,
    seconds: float,
    start: Any,
    ready: Any,
    results: Any,
) -> None:
    """One replica's audit log: ``concurrency`` appenders for ``seconds`` after the start signal."""
    from mcp_gateway.audit.log import AuditLog
    from mcp_gateway.audit.postgres import PostgresAuditSink
    from mcp_gateway.audit.seal import Sealer

    sink = PostgresAuditSink(dsn, schema=schema, sealer=Sealer(seal_key))
    latencies: list[float] = []
    failures = 0

    async def run() -> float:
        nonlocal failures
        log = AuditLog(sink, commit_on_loop=False)
        # Warm the connection (first transaction) before the clock starts.
        await log.append(_event(index, 10**9))
        ready.put(index)
        await asyncio.to_thread(start.wait, 60)
        deadline = time.monotonic() + seconds
        counter = iter(range(10**9))

        async def appender() -> None:
            nonlocal failures
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                try:
                    await log.append(_event(index, next(counter)))
                except Exception:  # counted and reported: a benchmark measures, it does not stop
                    failures += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(appender())
        elapsed = time.perf_counter() - t0
        await log.aclose()
        return elapsed

    try:
        elapsed = asyncio.run(run())
    finally:
        sink.close()
    results.put(
        {
            "process": index,
            "appends": len(latencies),
            "failures": failures,
            "elapsed_s": elapsed,
            "latencies": latencies,
        }
    )


def _check_chain(dsn: str, schema: str, seal_key: bytes) -> dict[str, Any]:
    """Read the whole chain back: links and hashes (``verify``) and every record's seal."""
    from mcp_gateway.audit.postgres import PostgresAuditSink
    from mcp_gateway.audit.record import GENESIS
    from mcp_gateway.audit.seal import Sealer, check_since
    from mcp_gateway.audit.verify import verify

    with PostgresAuditSink(dsn, schema=schema, create=False) as sink:
        records = sink.records()
        seals = sink.seals()
    report = verify(records)
    unsealed = check_since(records, seals, Sealer(seal_key), (0, GENESIS))
    return {"records": len(records), "chain_ok": report.ok, "seal_problems": len(unsealed)}


def _drop(dsn: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def one_run(dsn: str, processes: int, concurrency: int, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    schema = f"bench_audit_{uuid.uuid4().hex[:10]}"
    seal_key = secrets.token_bytes(32)
    start, ready, results = ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(
            target=_writer_process,
            args=(i, dsn, schema, seal_key, concurrency, seconds, start, ready, results),
            daemon=True,
        )
        for i in range(processes)
    ]
    try:
        # The first process creates the schema; the others would wait on its advisory lock anyway.
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=60)
        wall0 = time.perf_counter()
        start.set()
        reports = [results.get(timeout=seconds + 60) for _ in procs]
        wall = time.perf_counter() - wall0
        for proc in procs:
            proc.join(timeout=30)
        chain = _check_chain(dsn, schema, seal_key)
    except queue.Empty:
        raise SystemExit("a writer process did not report in time") from None
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        _drop(dsn, schema)
    appends = sum(r["appends"] for r in reports)
    latencies = sorted(x for r in reports for x in r["latencies"])
    # The measured window is each process's own; the total rate uses the longest of them.
    window = max(r["elapsed_s"] for r in reports)
    return {
        "appends": appends,
        "failures": sum(r["failures"] for r in reports),
        "window_s": round(window, 3),
        "wall_s": round(wall, 3),
        "appends_per_s": round(appends / window, 1),
        "per_process_per_s": [round(r["appends"] / r["elapsed_s"], 1) for r in reports],
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "chain": chain,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="audit appends/s, several processes, one PostgreSQL chain")
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument(
        "--concurrency", default="32,64", help="appenders in each process (calls in flight); a list runs each"
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="before each run, wait up to S seconds for a quiet machine",
    )
    args = parser.parse_args(argv)
    levels = [int(x) for x in str(args.concurrency).split(",") if x.strip()]
    stamp = timestamp()
    cells: list[dict[str, Any]] = []
    for concurrency in levels:
        runs = []
        for _ in range(args.runs):
            other = wait_for_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
            runs.append(
                {
                    **one_run(args.dsn, args.processes, concurrency, args.seconds),
                    "other_load_cores_before": other,
                }
            )
        for run in runs:
            chain = run["chain"]
            # +1 per process: the warm-up append before the clock started.
            expected = run["appends"] + args.processes
            if not chain["chain_ok"] or chain["seal_problems"] or chain["records"] != expected:
                raise SystemExit(f"the chain does not hold what was appended: {chain}, expected {expected}")
        median = statistics.median(run["appends_per_s"] for run in runs)
        cells.append({"concurrency": concurrency, "median_appends_per_s": median, "runs": runs})
    command = (
        f"python bench/audit_writers.py --processes {args.processes} --concurrency {args.concurrency}"
        f" --seconds {args.seconds:g} --runs {args.runs}"
        + (f" --wait-quiet {args.wait_quiet:g}" if args.wait_quiet > 0 else "")
    )
    data = {
        "benchmark": "audit-writers",
        "timestamp": stamp,
        "command": command,
        "machine": machine_facts(),
        "cells": cells,
    }
    rows = []
    for cell in cells:
        runs = cell["runs"]
        middle = sorted(runs, key=lambda run: run["appends_per_s"])[len(runs) // 2]
        rows.append(
            [
                f"{args.processes} x {cell['concurrency']}",
                f"**{cell['median_appends_per_s']:.0f}**",
                ", ".join(f"{run['appends_per_s']:.0f}" for run in runs),
                f"{middle['p50_ms']:.1f} / {middle['p99_ms']:.1f}",
                str(sum(run["failures"] for run in runs)),
                f"{sum(run['chain']['records'] for run in runs)} records, chain and seals ok",
            ]
        )
    markdown = (
        f"## Audit appends, {args.processes} writer processes on one PostgreSQL chain\n\n"
        f"`{command}`\n\n"
        + md_table(
            [
                "processes x appenders",
                f"appends/s, median of {args.runs}",
                "each run",
                "p50 / p99 ms (median run)",
                "failures",
                "read back",
            ],
            rows,
        )
    )
    path = write_results("audit-writers", data, markdown, stamp)
    print(markdown)
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
