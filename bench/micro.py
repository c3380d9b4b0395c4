"""Micro-benchmarks of the governed path's parts, in-process, one at a time.

- policy: ``parse_policy_text`` of 1,000 agents x 20 tools, then ``evaluate`` (allow, constraint
  deny, deny rule, no grant) in µs per decision;
- audit: durable appends/s through ``AuditLog`` over ``SQLiteAuditSink`` (WAL, synchronous=FULL),
  with 1 writer and with 32 concurrent writers (group commit), each with commits in a worker thread
  and on the event loop (``commit_on_loop``, the gateway's default), plus the bare sink's commit time;
- vault: ``Vault.resolve`` (SQLite read + AES-256-GCM unseal), ``resolve_all`` of 100 secrets, and the
  per-call ``SecretsView.redactor()`` check the gateway makes;
- redaction: ``Redactor.from_secrets`` with 100 secrets, ``scrub_json`` over 1 KiB, 16 KiB and 256 KiB
  results (one text block, and the same bytes as many small JSON strings);
- hot-path pieces: token verification, result validate/dump with pydantic, the result digest.

Every loop is bounded by a count and a time budget. Run: ``python bench/micro.py [--quick]``.
Writes ``bench/results/micro-<timestamp>.json`` (+ ``.md``) and prints Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import string
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import machine_facts, md_table, percentile, timestamp, write_results

Row = dict[str, Any]


def timed(fn: Callable[[], object], count: int, budget_s: float) -> list[float]:
    """Call ``fn`` up to ``count`` times within ``budget_s``; return sorted per-call µs."""
    out: list[float] = []
    deadline = time.perf_counter() + budget_s
    for _ in range(count):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1000)
        if t0 / 1e9 > deadline:
            break
    out.sort()
    return out


def stats_us(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_us": round(percentile(values, 50), 2),
        "p99_us": round(percentile(values, 99), 2),
        "mean_us": round(sum(values) / len(values), 2) if values else float("nan"),
    }


# ---- policy ------------------------------------------------------------------------------------


def policy_text(agents: int, tools: int) -> str:
    lines = ["version: 1", "agents:"]
    for a in range(agents):
        lines += [f"  agent-{a}:", "    grants:"]
        for t in range(tools):
            lines += [f"      - id: a{a}-t{t}", f"        tool: up{t % 5}.tool{t}", "        args:"]
            kind = t % 4
            if kind == 0:
                lines.append('          text: {max_length: 200, pattern: "^[a-z0-9 ]*$"}')
            elif kind == 1:
                lines.append("          region: {in: [eu, us, ap], required: true}")
            elif kind == 2:
                lines.append("          limit: {min: 1, max: 1000}")
            else:
                lines.append("          fields: {subset_of: [id, name, amount, owner]}")
            if t == 0:
                lines += [
                    "        deny:",
                    f"          - id: a{a}-no-drop",
                    "            args: {text: {pattern: '^drop.*'}}",
                ]
    return "\n".join(lines) + "\n"


def good_args(t: int) -> dict[str, Any]:
    return [
        {"text": "select 1 from orders"},
        {"region": "eu"},
        {"limit": 50},
        {"fields": ["id", "amount"]},
    ][t % 4]


def bench_policy(agents: int, tools: int, count: int) -> tuple[Row, list[list[str]]]:
    from mcp_gateway.policy.evaluate import evaluate
    from mcp_gateway.policy.load import parse_policy_text

    text = policy_text(agents, tools)
    t0 = time.perf_counter()
    policy = parse_policy_text(text, "bench.yaml")
    parse_s = time.perf_counter() - t0
    rng = random.Random(7)
    cases: dict[str, Callable[[], tuple[str, str, dict[str, Any]]]] = {
        "allow": lambda: (lambda a, t: (f"agent-{a}", f"up{t % 5}.tool{t}", good_args(t)))(
            rng.randrange(agents), rng.randrange(tools)
        ),
        "deny: constraint violated": lambda: (
            f"agent-{rng.randrange(agents)}",
            "up2.tool2",
            {"limit": 5000},
        ),
        "deny: deny rule fires": lambda: (
            f"agent-{rng.randrange(agents)}",
            "up0.tool0",
            {"text": "drop table"},
        ),
        "deny: no grant (unknown tool)": lambda: (f"agent-{rng.randrange(agents)}", "up9.nope", {}),
    }
    results: Row = {
        "agents": agents,
        "tools_per_agent": tools,
        "policy_bytes": len(text),
        "parse_s": round(parse_s, 3),
    }
    rows = [
        [
            "parse_policy_text",
            f"{agents} agents x {tools} tools ({len(text) // 1024} KiB)",
            f"{parse_s:.2f} s",
            "",
        ]
    ]
    for name, make in cases.items():
        inputs = [make() for _ in range(count)]
        expected = "allow" if name == "allow" else "deny"
        wrong: list[int] = []
        feed = iter(inputs)

        def one(it: Any = feed, expected: str = expected, wrong: list[int] = wrong) -> None:
            agent, tool, args = next(it)
            if evaluate(policy, agent, tool, args).effect != expected:
                wrong.append(1)

        values = timed(one, count, 10)
        results[name] = {**stats_us(values), "wrong_decisions": len(wrong)}
        rows.append(
            [
                f"evaluate: {name}",
                f"{len(values)} decisions",
                f"{percentile(values, 50):.1f} µs",
                f"{percentile(values, 99):.1f} µs",
            ]
        )
        if wrong:
            raise RuntimeError(f"policy bench: {len(wrong)} unexpected decisions for {name}")
    return results, rows


# ---- audit -------------------------------------------------------------------------------------


def _event(i: int) -> Any:
    from mcp_gateway.types import AuditEvent

    return AuditEvent(
        kind="intent",
        call_id=f"{i:032x}",
        agent="bench",
        tool="up.echo",
        decision="allow",
        args={"text": "hello world " * 3},
        detail={"rule_ids": ["bench-echo"], "token_id": "abcdefghijkl"},
    )


class CountingSink:
    """Counts the sink's transactions (one ``append`` = one commit = one fsync)."""

    def __init__(self, sink: Any) -> None:
        self.sink, self.commits, self.events = sink, 0, 0

    def append(self, events: Any) -> Any:
        self.commits += 1
        self.events += len(events)
        return self.sink.append(events)

    def append_nowait(self, events: Any) -> Any:
        records = self.sink.append_nowait(events)
        if records is not None:
            self.commits += 1
            self.events += len(events)
        return records

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)


async def _audit_writers(
    log: Any, writers: int, per_writer: int, budget_s: float
) -> tuple[list[float], float]:
    latencies: list[float] = []
    deadline = time.monotonic() + budget_s

    async def writer(w: int) -> None:
        for i in range(per_writer):
            if time.monotonic() > deadline:
                return
            t0 = time.perf_counter_ns()
            await log.append(_event(w * 1_000_000 + i))
            latencies.append((time.perf_counter_ns() - t0) / 1000)

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for w in range(writers):
            tg.create_task(writer(w))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return latencies, elapsed


def bench_audit(count: int, budget_s: float) -> tuple[Row, list[list[str]]]:
    from mcp_gateway.audit.log import AuditLog
    from mcp_gateway.audit.seal import Sealer
    from mcp_gateway.audit.sqlite import SQLiteAuditSink

    results: Row = {}
    rows: list[list[str]] = []
    # Sealed, as a gateway with an unsealed vault writes: one HMAC and one seal row per batch.
    sealer = Sealer(secrets.token_bytes(32))
    with tempfile.TemporaryDirectory(prefix="mcp-gateway-micro-") as tmp:
        sink = SQLiteAuditSink(Path(tmp) / "raw.db", sealer=sealer)
        try:
            values = timed(lambda: sink.append([_event(0)]), count, budget_s)
        finally:
            sink.close()
        results["sink_append_1_event"] = stats_us(values)
        rows.append(
            [
                "SQLiteAuditSink.append (1 event, sealed, 1 commit + fsync)",
                f"{len(values)} commits",
                f"{percentile(values, 50):.0f} µs",
                f"{percentile(values, 99):.0f} µs",
            ]
        )
        for on_loop in (False, True):
            for writers in (1, 32):
                path = Path(tmp) / f"log-{writers}-{on_loop}.db"
                counting = CountingSink(SQLiteAuditSink(path, sealer=sealer))
                try:

                    async def run(
                        counting: CountingSink = counting, writers: int = writers, on_loop: bool = on_loop
                    ) -> tuple[list[float], float]:
                        log = AuditLog(counting, commit_on_loop=on_loop)
                        try:
                            per_writer = max(1, count // writers * (4 if writers > 1 else 1))
                            return await _audit_writers(log, writers, per_writer, budget_s)
                        finally:
                            await log.aclose()

                    latencies, elapsed = asyncio.run(run())
                finally:
                    counting.sink.close()
                n = len(latencies)
                per_s = n / elapsed if elapsed else 0.0
                batch = counting.events / counting.commits if counting.commits else 0.0
                where = "on the loop" if on_loop else "in a thread"
                results[f"auditlog_{writers}_writers" + ("_on_loop" if on_loop else "")] = {
                    **stats_us(latencies),
                    "appends_per_s": round(per_s, 1),
                    "commits": counting.commits,
                    "mean_events_per_commit": round(batch, 2),
                }
                rows.append(
                    [
                        f"AuditLog.append, {writers} writer{'s' if writers > 1 else ''}, commit {where}",
                        f"{per_s:.0f} appends/s, {batch:.1f} events/commit",
                        f"{percentile(latencies, 50):.0f} µs",
                        f"{percentile(latencies, 99):.0f} µs",
                    ]
                )
    return results, rows


# ---- vault -------------------------------------------------------------------------------------


def bench_vault(count: int) -> tuple[Row, list[list[str]]]:
    from mcp_gateway.core.state import SecretsView
    from mcp_gateway.vault.keys import init_key_file, load_keyring
    from mcp_gateway.vault.service import Vault
    from mcp_gateway.vault.store import SQLiteSecretStore

    results: Row = {}
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="mcp-gateway-micro-") as tmp:
        key = Path(tmp) / "master.key"
        init_key_file(key)
        store = SQLiteSecretStore(Path(tmp) / "vault.db")
        vault = Vault(store, load_keyring(env_value=None, key_file=key))
        for i in range(100):
            vault.put(f"secret-{i}", secrets.token_urlsafe(32).encode())
        try:
            names = [f"secret-{random.randrange(100)}" for _ in range(count)]
            it = iter(names)
            values = timed(lambda: vault.resolve(next(it)), count, 10)
            results["resolve"] = stats_us(values)
            rows.append(
                [
                    "Vault.resolve (sqlite read + AES-GCM unseal)",
                    f"{len(values)} resolves",
                    f"{percentile(values, 50):.1f} µs",
                    f"{percentile(values, 99):.1f} µs",
                ]
            )
            values = timed(vault.resolve_all, max(1, count // 50), 10)
            results["resolve_all_100"] = stats_us(values)
            rows.append(
                [
                    "Vault.resolve_all (100 secrets)",
                    f"{len(values)} runs",
                    f"{percentile(values, 50) / 1000:.2f} ms",
                    f"{percentile(values, 99) / 1000:.2f} ms",
                ]
            )
            view = SecretsView(vault)
            view.redactor()  # first build
            values = timed(view.redactor, count, 10)
            results["secretsview_redactor_steady"] = stats_us(values)
            rows.append(
                [
                    "SecretsView.redactor() per call (generation check)",
                    f"{len(values)} calls",
                    f"{percentile(values, 50):.1f} µs",
                    f"{percentile(values, 99):.1f} µs",
                ]
            )
            values = timed(lambda: view.resolve("secret-1"), count, 10)
            results["secretsview_resolve_cached"] = stats_us(values)
            rows.append(
                [
                    "SecretsView.resolve (cached plaintexts)",
                    f"{len(values)} calls",
                    f"{percentile(values, 50):.1f} µs",
                    f"{percentile(values, 99):.1f} µs",
                ]
            )
        finally:
            store.close()
    return results, rows


# ---- redaction ---------------------------------------------------------------------------------


def _text_payload(size: int, rng: random.Random) -> dict[str, Any]:
    text = "".join(rng.choices(string.ascii_letters + string.digits + " .,", k=size))
    return {"content": [{"type": "text", "text": text}], "isError": False}


def _structured_payload(size: int, rng: random.Random) -> dict[str, Any]:
    rows = []
    used = 0
    while used < size:
        row = {
            "id": rng.randrange(10**6),
            "name": "".join(rng.choices(string.ascii_lowercase, k=12)),
            "owner": "".join(rng.choices(string.ascii_lowercase, k=8)),
            # Long enough to be scanned: the redactor skips strings shorter than its shortest form.
            "note": "".join(rng.choices(string.ascii_letters + " ", k=64)),
        }
        rows.append(row)
        used += 130
    return {
        "content": [{"type": "text", "text": "rows"}],
        "structuredContent": {"rows": rows},
        "isError": False,
    }


def bench_redaction(count: int) -> tuple[Row, list[list[str]]]:
    from mcp_gateway.redact import Redactor
    from mcp_gateway.types import SecretValue

    values = [SecretValue(f"secret-{i}", secrets.token_urlsafe(32).encode()) for i in range(100)]
    t0 = time.perf_counter()
    redactor = Redactor.from_secrets(values)
    build_ms = (time.perf_counter() - t0) * 1000
    results: Row = {"from_secrets_100_ms": round(build_ms, 2)}
    rows = [["Redactor.from_secrets (100 secrets)", "1 build", f"{build_ms:.1f} ms", ""]]
    rng = random.Random(11)
    for size in (1024, 16 * 1024, 256 * 1024):
        for shape, make in (("text", _text_payload), ("structured", _structured_payload)):
            payload = make(size, rng)
            n = max(5, count // max(1, size // 1024))
            per = timed(lambda payload=payload: redactor.scrub_json(payload), n, 10)
            kib = size / 1024
            results[f"scrub_json_{shape}_{int(kib)}KiB"] = {
                **stats_us(per),
                "us_per_KiB": round(percentile(per, 50) / kib, 2),
            }
            rows.append(
                [
                    f"scrub_json {int(kib)} KiB ({shape})",
                    f"{percentile(per, 50) / kib:.1f} µs/KiB",
                    f"{percentile(per, 50):.0f} µs",
                    f"{percentile(per, 99):.0f} µs",
                ]
            )
    # How the cost grows with the number of vault secrets (one alternation of all their forms).
    text16 = _text_payload(16 * 1024, rng)
    for n_secrets in (1, 10, 100):
        small = Redactor.from_secrets(values[:n_secrets])
        per = timed(lambda small=small: small.scrub_json(text16), max(5, count // 16), 10)
        results[f"scrub_json_text_16KiB_{n_secrets}_secrets"] = {
            **stats_us(per),
            "us_per_KiB": round(percentile(per, 50) / 16, 2),
        }
        rows.append(
            [
                f"scrub_json 16 KiB (text), {n_secrets} secret{'s' if n_secrets > 1 else ''}",
                f"{percentile(per, 50) / 16:.1f} µs/KiB",
                f"{percentile(per, 50):.0f} µs",
                f"{percentile(per, 99):.0f} µs",
            ]
        )
    # A result that does contain a secret (the cost of actually replacing).
    leak = _text_payload(16 * 1024, rng)
    leak["content"][0]["text"] += values[3].reveal_text()
    per = timed(lambda: redactor.scrub_json(leak), max(5, count // 16), 10)
    results["scrub_json_text_16KiB_with_hit"] = stats_us(per)
    rows.append(
        ["scrub_json 16 KiB with 1 hit", "", f"{percentile(per, 50):.0f} µs", f"{percentile(per, 99):.0f} µs"]
    )
    return results, rows


# ---- other per-call pieces ---------------------------------------------------------------------


def bench_hot_path(count: int) -> tuple[Row, list[list[str]]]:
    import mcp_types as types

    from mcp_gateway.app.wiring import open_agents
    from mcp_gateway.audit.record import digest
    from mcp_gateway.config import load_settings

    results: Row = {}
    rows: list[list[str]] = []
    payload = {
        "content": [{"type": "text", "text": "w0c0i1-xxxxxxxxxxxxxxxxxxxxxxxxx"}],
        "structuredContent": {"result": "w0c0i1-xxxxxxxxxxxxxxxxxxxxxxxxx"},
        "isError": False,
    }
    model = types.CallToolResult.model_validate(payload)
    pieces: list[tuple[str, Callable[[], object]]] = [
        ("CallToolResult.model_validate (echo result)", lambda: types.CallToolResult.model_validate(payload)),
        (
            "CallToolResult.model_dump (echo result)",
            lambda: model.model_dump(by_alias=True, mode="json", exclude_none=True),
        ),
        ("digest(result) (canonical JSON + sha256)", lambda: digest(payload)),
    ]
    with tempfile.TemporaryDirectory(prefix="mcp-gateway-micro-") as tmp:
        settings = load_settings(None, data_dir=tmp)
        agents = open_agents(settings)
        try:
            _, token = agents.create("bench")
            pieces.append(("SQLiteAgentStore.verify (token → principal)", lambda: agents.verify(token)))
            for name, fn in pieces:
                values = timed(fn, count, 10)
                results[name] = stats_us(values)
                rows.append(
                    [
                        name,
                        f"{len(values)} calls",
                        f"{percentile(values, 50):.1f} µs",
                        f"{percentile(values, 99):.1f} µs",
                    ]
                )
        finally:
            agents.close()
    return results, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="micro-benchmarks of policy, audit, vault, redaction")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--tools", type=int, default=20)
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    stamp = timestamp()
    sections: dict[str, Row] = {}
    md = [f"## Micro-benchmarks ({stamp})\n"]
    header = ["what", "volume", "p50", "p99"]
    for title, key, run in (
        (
            f"Policy ({args.agents} agents x {args.tools} tools)",
            "policy",
            lambda: bench_policy(args.agents, args.tools, 20_000 // scale),
        ),
        (
            "Durable audit (SQLite WAL, synchronous=FULL)",
            "audit",
            lambda: bench_audit(2_000 // scale, 10.0 / scale),
        ),
        ("Vault", "vault", lambda: bench_vault(5_000 // scale)),
        ("Redaction (100 secrets)", "redaction", lambda: bench_redaction(400 // scale)),
        ("Other per-call pieces", "hot_path", lambda: bench_hot_path(5_000 // scale)),
    ):
        print(f"{title}...", flush=True)
        data, rows = run()
        sections[key] = data
        md.append(f"### {title}\n\n" + md_table(header, rows))
    text = "\n".join(md)
    path = write_results(
        "micro",
        {"benchmark": "micro", "timestamp": stamp, "machine": machine_facts(), **sections},
        text,
        stamp,
    )
    print()
    print(text)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
