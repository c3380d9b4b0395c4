"""CPU per durable audit commit: the gateway's SQLite sink, what each of its parts costs, and the floor's row.

At C=1 every governed call makes two commits in sequence (the intent before the upstream is
touched, the outcome before the answer), and nothing shares them. So the CPU of one commit, twice,
is part of the gateway's CPU per call at C=1; ``bench/proxy.py`` measures the whole, this measures
that part, in one thread, with nothing else running:

- ``gateway``: ``SQLiteAuditSink.append`` of one intent-sized event, sealed, as the gateway runs it
  (WAL, ``synchronous=FULL``: every commit is fsynced; the search and time indexes; a seal row);
- ``no seals index``, ``no search indexes`` (the five of ``rows.SEARCH_INDEXES``), ``no secondary
  indexes`` (also ``ts`` and ``call_id``), ``no seal`` (no HMAC, no seal row), ``bare`` (neither
  seal nor secondary index): the same sink with one part taken away, to price that part;
- ``records only``: the sink's Python work without SQLite (``normalize_event``, ``chain_encoded``,
  ``to_row``, the seal);
- ``floor row``: ``bench/floor_forwarder.py``'s commit (a 6-column row, no chain, no seal, no index).

The variants are diagnostics: the gateway keeps every part (search needs the indexes, tamper
evidence needs the chain and the seal). Each round runs every variant ``--commits`` times, in turn;
the table shows medians over ``--rounds`` rounds of CPU µs per commit (the thread's user and system
time, from ``getrusage``) and wall µs per commit (fsync included).

Run: ``python bench/audit_commit.py [--commits 3000] [--rounds 5]``; results:
``bench/results/audit-commit-<UTC>.{json,md}``.
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import machine_facts, md_table, timestamp, write_results

from mcp_gateway.audit.record import chain_encoded, normalize_event
from mcp_gateway.audit.rows import SEARCH_INDEXES, to_row
from mcp_gateway.audit.seal import Sealer, seal_to_row
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.types import AuditEvent

SEAL_KEY = b"bench audit seal key, 32 bytes.."


def event() -> AuditEvent:
    """An intent-sized event, like the gateway's for the bench's ``up.echo`` call."""
    return AuditEvent(
        kind="call.intent",
        call_id=uuid.uuid4().hex,
        agent="bench",
        tool="up.echo",
        decision="allow",
        args={"text": "hello"},
        detail={"era": "2026-07-28", "upstream": "up", "session": "", "client": "bench"},
    )


def sink_variant(workdir: Path, *, seal: bool, drop: tuple[str, ...]) -> Callable[[], None]:
    sink = SQLiteAuditSink(workdir / "audit.sqlite3", sealer=Sealer(SEAL_KEY) if seal else None)
    for index in drop:
        sink._conn.execute(f"DROP INDEX {index}")  # a diagnostic variant of the real sink
    events = [event() for _ in range(64)]
    count = 0

    def commit() -> None:
        nonlocal count
        sink.append([events[count % len(events)]])
        count += 1

    return commit


def records_only() -> Callable[[], None]:
    sealer = Sealer(SEAL_KEY)
    events = [event() for _ in range(64)]
    head: tuple[int, str] = (0, "0" * 64)
    count = 0

    def commit() -> None:
        nonlocal head, count
        encoded = chain_encoded(head, [normalize_event(events[count % len(events)])], time.time())
        rows = [to_row(record, (a, d)) for record, a, d in encoded]
        records = [record for record, _, _ in encoded]
        seal_to_row(sealer.seal(records))
        head, count = (records[-1].seq, records[-1].hash), count + 1
        del rows

    return commit


def floor_row(workdir: Path) -> Callable[[], None]:
    db = sqlite3.connect(workdir / "floor.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE audit (id INTEGER PRIMARY KEY, ts REAL, agent TEXT, tool TEXT, phase TEXT,"
        " outcome TEXT)"
    )

    def commit() -> None:
        db.execute("BEGIN")
        db.execute(
            "INSERT INTO audit (ts, agent, tool, phase, outcome) VALUES (?, ?, ?, ?, ?)",
            (time.time(), "bench", "up.echo", "intent", ""),
        )
        db.execute("COMMIT")

    return commit


SEARCH = tuple(SEARCH_INDEXES)
SECONDARY = (*SEARCH, "audit_ts", "audit_call_id")
VARIANTS: dict[str, Callable[[Path], Callable[[], None]]] = {
    "gateway": lambda d: sink_variant(d, seal=True, drop=()),
    "no seals index": lambda d: sink_variant(d, seal=True, drop=("seals_last_seq",)),
    "no search indexes": lambda d: sink_variant(d, seal=True, drop=SEARCH),
    "no secondary indexes": lambda d: sink_variant(d, seal=True, drop=SECONDARY),
    "no seal": lambda d: sink_variant(d, seal=False, drop=()),
    "bare": lambda d: sink_variant(d, seal=False, drop=SECONDARY),
    "records only": lambda d: records_only(),
    "floor row": floor_row,
}


def thread_cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime, usage.ru_stime


def run(commit: Callable[[], None], n: int) -> dict[str, float]:
    """µs per commit over ``n`` commits: user, system and wall."""
    user0, sys0 = thread_cpu()
    wall0 = time.perf_counter()
    for _ in range(n):
        commit()
    wall = time.perf_counter() - wall0
    user1, sys1 = thread_cpu()
    return {
        "user_us": 1e6 * (user1 - user0) / n,
        "system_us": 1e6 * (sys1 - sys0) / n,
        "cpu_us": 1e6 * (user1 - user0 + sys1 - sys0) / n,
        "wall_us": 1e6 * wall / n,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=3000, help="commits per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args()
    stamp = timestamp()
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="mcp-gateway-bench-commit-") as tmp:
        commits: dict[str, Callable[[], None]] = {}
        for i, (name, make) in enumerate(VARIANTS.items()):
            workdir = Path(tmp) / str(i)
            workdir.mkdir()
            commits[name] = make(workdir)
            for _ in range(args.warmup):
                commits[name]()
        for rnd in range(args.rounds):
            for name, commit in commits.items():
                rounds[name].append(run(commit, args.commits))
            print(f"round {rnd + 1}/{args.rounds} done", flush=True)
    medians = {
        name: {key: round(statistics.median(r[key] for r in runs), 1) for key in runs[0]}
        for name, runs in rounds.items()
    }
    gateway = medians["gateway"]["cpu_us"]
    rows = [
        [
            name,
            f"{m['cpu_us']:.1f}",
            f"{m['user_us']:.1f}",
            f"{m['system_us']:.1f}",
            f"{m['wall_us']:.1f}",
            "" if name == "gateway" else f"{gateway - m['cpu_us']:+.1f}",
        ]
        for name, m in medians.items()
    ]
    command = f"python bench/audit_commit.py --commits {args.commits} --rounds {args.rounds}"
    header = ["variant", "CPU µs/commit", "user", "system", "wall µs/commit", "gateway minus it (CPU µs)"]
    table = md_table(header, rows)
    markdown = (
        f"## CPU per durable audit commit ({stamp})\n\n`{command}`; one event per commit, one thread; "
        f"medians of {args.rounds} rounds of {args.commits} commits.\n\n{table}\n"
    )
    data: dict[str, Any] = {
        "benchmark": "audit-commit",
        "timestamp": stamp,
        "command": command,
        "machine": machine_facts(),
        "medians": medians,
        "rounds": rounds,
    }
    path = write_results("audit-commit", data, markdown, stamp)
    print(markdown)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
