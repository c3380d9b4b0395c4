"""Proxy overhead: calls/s, latency and CPU per call, direct to an SDK upstream vs through forwarders.

One run starts the echo upstream and a gateway in front of it (vault-injected upstream credential,
an agent token, a policy granting ``up.echo`` with a ``max_length`` constraint, durable SQLite
audit), and optionally the floor forwarder (``--floor``, ``floor_forwarder.py``) and the ungoverned
peers (``--peers``, ``peers.py``: mcp-proxy and supergateway fronting the same echo over stdio).
For each round, protocol era and concurrency it measures every path with every client in turn
(interleaved, so drift hits all alike) and reports the median over rounds.

Paths: ``direct`` (the upstream), ``floor``, ``gateway`` (proxied ``up.echo``), ``builtin`` (the
gateway's own ``gateway.echo``), ``mcp-proxy``, ``supergateway``. Clients: ``sdk`` (the SDK's
``mcp.Client``, the headline), ``raw`` (the lean raw HTTP/1.1 client), ``both``.

Run: ``python bench/proxy.py [--calls 2000] [--concurrency 1,8,32] [--eras legacy,modern]
[--client sdk|raw|both] [--rounds 3] [--floor] [--peers]``
Writes ``bench/results/proxy-<timestamp>.json`` (+ ``.md``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    BUILTIN_TOOL,
    TOOL,
    UPSTREAM_NAME,
    Stack,
    free_port,
    machine_facts,
    md_table,
    percentile,
    port_open,
    proc_cpu_seconds,
    proc_system_seconds,
    running_stack,
    system_busy_seconds,
    tail,
    timestamp,
    wait_for_quiet,
    wait_until,
    write_results,
)
from loadgen import WorkerSpec, default_workers, run_cell, split

PATHS = ("direct", "floor", "gateway", "builtin", "mcp-proxy", "supergateway")
# The paths that may be unable to serve an era (a cell with no successful call shows "—" and why).
OPTIONAL = ("floor", "mcp-proxy", "supergateway")
# Known in advance, so no round is spent on them.
KNOWN_GAPS = {
    ("mcp-proxy", "modern"): "mcp-proxy 0.13.0 runs on the Python SDK 1.30, which answers 2026-07-28 with"
    " 400 (Missing session ID; with --stateless: Unsupported protocol version)",
    ("floor", "legacy"): "the floor serves 2026-07-28 only (no sessions)",
    (
        "supergateway",
        "modern",
    ): "supergateway 4.0.0 answers a session-less 2026-07-28 POST by spawning a new stdio child per"
    " request (about 1 s each here: Python start-up), so it measures process start, not forwarding",
}
NOISE_CORES = 0.2
DIRECT_AUTH = "Bearer direct-calls-need-any-credential"


@dataclass
class CellConfig:
    calls: int
    max_seconds: float
    warmup: int
    client: str = "raw"
    workers: int | None = None


@dataclass
class Forwarder:
    """A process in front of the echo: its URL, and whether its upstream is its own child (stdio)."""

    url: str
    pid: int
    stdio_upstream: bool
    log: Path


@dataclass
class Extras:
    forwarders: dict[str, Forwarder] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)


def group_cpu_seconds(pgid: int, *, exclude: int) -> float:
    """CPU seconds of every live process in process group ``pgid`` except ``exclude``."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        pid = int(stat.parent.name)
        if pid == exclude:
            continue
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field #5, pgrp
            total += proc_cpu_seconds(pid) if Path(f"/proc/{pid}").exists() else 0.0
    return total


def calls_for(base: int, concurrency: int) -> int:
    """``base`` calls at C=1; more at higher concurrency (the per-cell time cap still applies)."""
    return base * min(4, max(1, concurrency // 4))


def measure(
    stack: Stack, path: str, era: str, concurrency: int, cfg: CellConfig, extras: Extras | None = None
) -> dict[str, Any]:
    """One cell: ``concurrency`` connections against ``path`` in ``era``; returns its statistics."""
    gateway_tool = f"{UPSTREAM_NAME}.{TOOL}"
    # Process whose CPU is charged to a call: "forwarder" (what sits in front of the echo),
    # "upstream" (the echo server), and the load generator ("client", measured by the workers).
    cpu_reads: dict[str, Any] = {"upstream": lambda: proc_cpu_seconds(stack.upstream.pid)}
    if path == "direct":
        url, tool, auth = stack.upstream_url, TOOL, DIRECT_AUTH
    elif path in ("gateway", "builtin"):
        # builtin: the gateway's own no-op tool through the full governed path (no upstream behind it).
        url, tool, auth = (
            stack.gateway_url,
            gateway_tool if path == "gateway" else BUILTIN_TOOL,
            f"Bearer {stack.token}",
        )
        assert stack.gateway is not None
        gateway_pid = stack.gateway.pid
        cpu_reads["forwarder"] = lambda: proc_cpu_seconds(gateway_pid)
        cpu_reads["forwarder_system"] = lambda: proc_system_seconds(gateway_pid)
    else:
        assert extras is not None
        fwd = extras.forwarders[path]
        url = fwd.url
        tool = gateway_tool if path == "floor" else TOOL
        auth = f"Bearer {stack.token}" if path == "floor" else DIRECT_AUTH
        cpu_reads["forwarder"] = lambda: proc_cpu_seconds(fwd.pid)
        cpu_reads["forwarder_system"] = lambda: proc_system_seconds(fwd.pid)
        if fwd.stdio_upstream:  # the peer's own stdio child(ren), not the HTTP upstream
            cpu_reads["upstream"] = lambda: group_cpu_seconds(fwd.pid, exclude=fwd.pid)
    workers = min(cfg.workers or default_workers(concurrency), concurrency)
    conns = split(concurrency, workers)
    calls = split(calls_for(cfg.calls, concurrency), workers)
    warmup = max(2, math.ceil(cfg.warmup / concurrency))
    cpu: dict[str, list[float]] = {name: [] for name in cpu_reads}
    cpu["machine"] = []

    def snapshot() -> None:
        cpu["machine"].append(system_busy_seconds())
        for name, read in cpu_reads.items():
            cpu[name].append(read())

    def spec_for(i: int) -> WorkerSpec:
        return WorkerSpec(url, era, tool, auth, conns[i], calls[i], warmup, cfg.max_seconds, cfg.client)

    results, wall = run_cell(spec_for, workers, on_start=snapshot, on_end=snapshot)
    latencies = sorted(ns / 1e6 for r in results for ns in r.latencies_ns)
    errors = sum(r.errors for r in results) + sum(1 for r in results if r.setup_error)
    samples = [s for r in results for s in ([r.setup_error] if r.setup_error else []) + r.error_samples]
    started = [r.started for r in results if r.started]
    finished = [r.finished for r in results if r.finished]
    elapsed = (max(finished) - min(started)) if started and finished else 0.0
    ok = len(latencies)
    spent = {name: (v[1] - v[0]) if len(v) == 2 else float("nan") for name, v in cpu.items()}
    machine = spent.pop("machine")
    # The forwarder's kernel share (fsync, syscalls), part of its figure: reported, not summed again.
    forwarder_system = spent.pop("forwarder_system", None)
    server_cpu = spent
    loadgen_cpu = sum(r.cpu_s for r in results)
    # CPU that neither the servers nor the load generator used: other work on the machine (noise).
    foreign = machine - sum(server_cpu.values()) - loadgen_cpu
    return {
        "path": path,
        "client": cfg.client,
        "era": era,
        "concurrency": concurrency,
        "workers": workers,
        "calls_ok": ok,
        "errors": errors,
        "error_samples": samples[:5],
        "elapsed_s": round(elapsed, 3),
        "wall_s": round(wall, 3),
        "calls_per_s": round(ok / elapsed, 1) if elapsed else 0.0,
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 3),
            "p90": round(percentile(latencies, 90), 3),
            "p99": round(percentile(latencies, 99), 3),
            "mean": round(sum(latencies) / ok, 3) if ok else float("nan"),
            "max": round(latencies[-1], 3) if ok else float("nan"),
        },
        "cpu_ms_per_call": {
            **{name: round(1000 * s / ok, 3) if ok else None for name, s in server_cpu.items()},
            "client": round(1000 * loadgen_cpu / ok, 3) if ok else None,
            **(
                {"forwarder_system": round(1000 * forwarder_system / ok, 3) if ok else None}
                if forwarder_system is not None
                else {}
            ),
            # Older readers (process.py, earlier results) know the gateway's figure by this name.
            **(
                {"gateway": round(1000 * server_cpu["forwarder"] / ok, 3) if ok else None}
                if path in ("gateway", "builtin")
                else {}
            ),
        },
        "foreign_cpu_cores": round(max(0.0, foreign) / wall, 2) if wall else None,
        "cpu_utilisation": {
            name: round(s / elapsed, 2) if elapsed else None for name, s in server_cpu.items()
        },
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median round's figures (calls/s, latency, CPU per call: each its own median); every round kept.

    Errors of every round are counted, so a failure in any round still shows.
    """
    cell = dict(runs[len(runs) // 2])
    ok_runs = [c for c in runs if c["calls_ok"]] or runs
    cell["calls_per_s"] = round(statistics.median(c["calls_per_s"] for c in runs), 1)
    cell["latency_ms"] = {
        k: round(statistics.median(c["latency_ms"][k] for c in ok_runs), 3) for k in runs[0]["latency_ms"]
    }
    cell["cpu_ms_per_call"] = {
        k: _median([c["cpu_ms_per_call"].get(k) for c in runs]) for k in runs[0]["cpu_ms_per_call"]
    }
    cell["foreign_cpu_cores"] = _median([c["foreign_cpu_cores"] for c in runs])
    cell["calls_ok"] = sum(c["calls_ok"] for c in runs)
    cell["errors"] = sum(c["errors"] for c in runs)
    cell["error_samples"] = [e for c in runs for e in c["error_samples"]][:5]
    cell["rounds"] = [
        {k: c[k] for k in ("calls_per_s", "calls_ok", "errors", "foreign_cpu_cores")}
        | {"p50_ms": c["latency_ms"]["p50"], "forwarder_cpu_ms": c["cpu_ms_per_call"].get("forwarder")}
        for c in runs
    ]
    return cell


def _median(values: list[Any]) -> float | None:
    present = [v for v in values if isinstance(v, int | float) and not math.isnan(v)]
    return round(statistics.median(present), 3) if present else None


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _system_share(cpu: dict[str, Any]) -> str:
    system = cpu.get("forwarder_system")
    return "" if system is None else f" ({_fmt(system, 2)})"


def _key(c: dict[str, Any]) -> tuple[str, str, int]:
    return (c["client"], c["era"], c["concurrency"])


def summary(cells: list[dict[str, Any]], clients: list[str], eras: list[str], concs: list[int]) -> str:
    """Per client: rows = paths, columns = era x C; calls/s (x direct), then forwarder CPU ms/call."""
    by = {(c["path"], *_key(c)): c for c in cells}
    out = []
    cols = [(e, n) for e in eras for n in concs]
    paths = [p for p in PATHS if any(c["path"] == p for c in cells)]
    for client in clients:
        rows = []
        for path in paths:
            row = [path]
            for era, n in cols:
                c, d = by.get((path, client, era, n)), by.get(("direct", client, era, n))
                if c is None or c.get("unavailable"):
                    row.append("—")
                    continue
                ratio = f" ({c['calls_per_s'] / d['calls_per_s']:.2f}x)" if d and d["calls_per_s"] else ""
                flag = " **!**" if c["errors"] else ""
                row.append(f"{c['calls_per_s']:.0f}{ratio if path != 'direct' else ''}{flag}")
            for era, n in cols:
                c = by.get((path, client, era, n))
                cpu = None if c is None or c.get("unavailable") else c["cpu_ms_per_call"].get("forwarder")
                row.append(_fmt(cpu, 2) if path != "direct" else "")
            rows.append(row)
        header = (
            ["path"] + [f"{e} C={n} calls/s" for e, n in cols] + [f"{e} C={n} fwd CPU ms" for e, n in cols]
        )
        out.append(f"### client: {client}\n\n" + md_table(header, rows))
    return "\n".join(out)


def peer_ratios(cells: list[dict[str, Any]]) -> str:
    """Gateway calls/s ÷ each peer's (and the floor's), per client, era and C."""
    by = {(c["path"], *_key(c)): c for c in cells if not c.get("unavailable")}
    lines = []
    for (path, client, era, n), gw in sorted(by.items()):
        if path != "gateway":
            continue
        parts = []
        for other in ("floor", "mcp-proxy", "supergateway"):
            o = by.get((other, client, era, n))
            if o and o["calls_per_s"]:
                parts.append(f"÷ {other} {gw['calls_per_s'] / o['calls_per_s']:.2f}")
        if parts:
            lines.append(f"- {client} {era} C={n}: gateway " + ", ".join(parts))
    return "\n".join(lines) + ("\n" if lines else "")


def markdown(cells: list[dict[str, Any]]) -> str:
    """Every cell: latency and each process's CPU ms per call."""
    direct = {_key(c): c["calls_per_s"] for c in cells if c["path"] == "direct"}
    rows = []
    for c in cells:
        if c.get("unavailable"):
            rows.append([c["path"], c["client"], c["era"], str(c["concurrency"]), "—", *[""] * 9])
            continue
        base = direct.get(_key(c))
        ratio = f"{c['calls_per_s'] / base:.2f}x" if c["path"] != "direct" and base else ""
        cpu = c["cpu_ms_per_call"]
        rows.append(
            [
                c["path"],
                c["client"],
                c["era"],
                str(c["concurrency"]),
                f"{c['calls_per_s']:.1f}",
                _fmt(c["latency_ms"]["p50"], 2),
                _fmt(c["latency_ms"]["p99"], 2),
                ratio,
                f"{c['calls_ok']}" + (f" (**{c['errors']} errors**)" if c["errors"] else ""),
                _fmt(cpu.get("forwarder"), 2) + _system_share(cpu),
                _fmt(cpu.get("upstream"), 2),
                _fmt(cpu.get("client"), 2),
                _fmt(c.get("foreign_cpu_cores"), 2),
                "",
            ]
        )
    header = [
        "path",
        "client",
        "era",
        "C",
        "calls/s",
        "p50 ms",
        "p99 ms",
        "vs direct",
        "calls",
        "forwarder CPU ms/call (of it system)",
        "upstream CPU ms/call",
        "client CPU ms/call",
        "other load (cores)",
        "",
    ]
    return md_table(header[:-1], [r[:-1] for r in rows])


def _pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` (and what it starts later) on ``cpus``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


def pin_forwarders(stack: Stack, extras: Extras) -> None:
    """``--pin``: forwarders on CPU 0; the upstream, this process and its load generators elsewhere."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least two CPUs")
    first, rest = {cpus[0]}, set(cpus[1:])
    forwarders = [fwd.pid for fwd in extras.forwarders.values()]
    if stack.gateway is not None:
        forwarders.append(stack.gateway.pid)
    for pid in forwarders:
        _pin(pid, first)
    _pin(stack.upstream.pid, rest)
    _pin(os.getpid(), rest)  # the load generator workers start later, from here
    print(f"pinned: forwarders on CPU {cpus[0]}, upstream and load generators on {sorted(rest)}", flush=True)


# ---- the extra forwarders ----------------------------------------------------------------------


def start_floor(stack: Stack, pool: str) -> Forwarder:
    port = free_port()
    log = stack.workdir / "floor.log"
    digest = hashlib.sha256(stack.token.encode()).hexdigest()
    cmd = [
        sys.executable,
        str(BENCH / "floor_forwarder.py"),
        "--port",
        str(port),
        "--upstream",
        stack.upstream_url,
        "--token-sha256",
        digest,
        "--audit-db",
        str(stack.workdir / "floor-audit.sqlite3"),
        "--pool",
        pool,
    ]
    proc = stack.group.spawn(cmd, log=log)
    _wait_listening(proc, port, log, "the floor forwarder")
    return Forwarder(f"http://127.0.0.1:{port}/mcp", proc.pid, False, log)


def start_peer(stack: Stack, name: str) -> Forwarder:
    from peers import PEERS

    peer = next(p for p in PEERS if p.name == name)
    port = free_port()
    log = stack.workdir / f"{name}.log"
    proc = stack.group.spawn(peer.command(port), log=log)
    _wait_listening(proc, port, log, name)
    return Forwarder(f"http://127.0.0.1:{port}/mcp", proc.pid, True, log)


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path, what: str) -> None:
    try:
        wait_until(lambda: proc.poll() is None and port_open(port), 60, what)
    except TimeoutError:
        sys.stderr.write(tail(log))
        raise


def start_extras(stack: Stack, *, floor: bool, peers: bool, pool: str) -> Extras:
    extras = Extras()
    if floor:
        extras.forwarders["floor"] = start_floor(stack, pool)
    if peers:
        from peers import PEERS, install

        for peer in PEERS:
            why = install(peer)
            if not why:
                try:
                    extras.forwarders[peer.name] = start_peer(stack, peer.name)
                except (TimeoutError, OSError) as exc:
                    why = f"did not start: {exc}"
            if why:
                extras.unavailable[peer.name] = why
                print(f"{peer.name}: unavailable: {why}", file=sys.stderr, flush=True)
    return extras


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="direct vs floor vs governed gateway vs peers: calls/s, CPU")
    parser.add_argument(
        "--calls", type=int, default=2000, help="calls per cell at C=1 (scaled up for larger C)"
    )
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated concurrencies")
    parser.add_argument(
        "--eras", default="legacy,modern", help="legacy (2025-11-25) and/or modern (2026-07-28)"
    )
    parser.add_argument("--max-seconds", type=float, default=10.0, help="time cap per cell")
    parser.add_argument(
        "--warmup", type=int, default=40, help="warm-up calls per cell (spread over connections)"
    )
    parser.add_argument(
        "--client",
        choices=("sdk", "raw", "both", "httpx"),
        default="sdk",
        help="load generator: the SDK's mcp.Client (default), the raw HTTP/1.1 client, both, or httpx",
    )
    parser.add_argument("--workers", type=int, default=None, help="load generator processes (default: cores)")
    parser.add_argument("--floor", action="store_true", help="also measure bench/floor_forwarder.py")
    parser.add_argument(
        "--floor-pool", choices=("h11", "httpcore"), default="h11", help="the floor's upstream client"
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also measure mcp-proxy and supergateway (installed into bench/.peers)",
    )
    parser.add_argument("--no-builtin", action="store_true", help="skip the gateway's built-in tool")
    parser.add_argument("--json-upstream", action="store_true", help="upstream answers JSON instead of SSE")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="diagnostic: every forwarder (gateway, floor, peers) on CPU 0, the upstream and the load"
        " generator on the other CPUs (so no other process evicts a forwarder's CPU caches between calls)",
    )
    parser.add_argument(
        "--no-lean-calls",
        action="store_true",
        help="send every upstream call through the SDK client (upstreams.NAME.lean_calls: false)",
    )
    parser.add_argument(
        "--no-fast-path",
        action="store_true",
        help="no effect (server.fast_path: false; one path per era since the gateway owns its dispatch)",
    )
    parser.add_argument(
        "--rounds",
        "--repeat",
        dest="rounds",
        type=int,
        default=3,
        help="interleaved rounds of every cell; the table shows medians",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each cell, wait up to this long for other processes to use < 0.25 cores",
    )
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    eras = [e.strip() for e in args.eras.split(",") if e.strip()]
    if any(e not in ("legacy", "modern") for e in eras) or not concurrencies or min(concurrencies) < 1:
        parser.error("eras are legacy/modern; concurrencies are positive integers")
    clients = ["sdk", "raw"] if args.client == "both" else [args.client]
    stamp = timestamp()
    runs: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    why_not: dict[tuple[str, str, str], str] = {}
    with running_stack(
        json_upstream=args.json_upstream, lean_calls=not args.no_lean_calls, fast_path=not args.no_fast_path
    ) as stack:
        extras = start_extras(stack, floor=args.floor, peers=args.peers, pool=args.floor_pool)
        if args.pin:
            pin_forwarders(stack, extras)
        paths = [
            p
            for p in PATHS
            if p in ("direct", "gateway")
            or (p == "builtin" and not args.no_builtin)
            or p in extras.forwarders
        ]
        for client in clients:
            for era in eras:
                for p in paths:
                    if KNOWN_GAPS.get((p, era)):
                        why_not[(p, client, era)] = KNOWN_GAPS[(p, era)]
                for p, why in extras.unavailable.items():
                    why_not[(p, client, era)] = why
        for rnd in range(max(1, args.rounds)):
            for era in eras:
                for concurrency in concurrencies:
                    for path in paths:  # interleaved: every path and client once per round
                        for client in clients:
                            if (path, client, era) in why_not:
                                continue
                            if args.wait_quiet > 0:
                                wait_for_quiet(args.wait_quiet)
                            cfg = CellConfig(args.calls, args.max_seconds, args.warmup, client, args.workers)
                            cell = measure(stack, path, era, concurrency, cfg, extras)
                            if path in OPTIONAL and not cell["calls_ok"]:
                                # This forwarder cannot serve the era (with this client): say why, once.
                                why_not[(path, client, era)] = (
                                    cell["error_samples"] or ["no call succeeded"]
                                )[0]
                                why = why_not[(path, client, era)]
                                print(f"{path:12} {client:3} {era:7}: unavailable: {why}", flush=True)
                                continue
                            runs.setdefault((path, client, era, concurrency), []).append(cell)
                            lat = cell["latency_ms"]
                            fwd = cell["cpu_ms_per_call"].get("forwarder")
                            print(
                                f"r{rnd + 1} {path:12} {client:3} {era:7} C={concurrency:<3}"
                                f" {cell['calls_per_s']:8.1f} calls/s  p50 {lat['p50']:7.2f} ms"
                                f"  fwd CPU {_fmt(fwd, 2)} ms/call  ({cell['calls_ok']} ok,"
                                f" {cell['errors']} errors, other load {cell['foreign_cpu_cores']} cores)",
                                flush=True,
                            )
    cells: list[dict[str, Any]] = []
    for path in PATHS:
        for client in clients:
            for era in eras:
                for concurrency in concurrencies:
                    if (path, client, era) in why_not:
                        cells.append(
                            {
                                "path": path,
                                "client": client,
                                "era": era,
                                "concurrency": concurrency,
                                "unavailable": why_not[(path, client, era)],
                                "errors": 0,
                            }
                        )
                    elif (path, client, era, concurrency) in runs:
                        cells.append(median_of(runs[(path, client, era, concurrency)]))
    errors = sum(c["errors"] for c in cells)
    note = (
        f"\n**WARNING: {errors} calls failed; see error_samples in the JSON.**\n"
        if errors
        else "\nNo call failed.\n"
    )
    noisy = [c for c in cells if (c.get("foreign_cpu_cores") or 0) > NOISE_CORES]
    if noisy:
        note += (
            f"\n**Noise: {len(noisy)} cells ran while other processes used more than {NOISE_CORES} cores "
            "(column 'other load'); rerun on a quiet machine for figures.**\n"
        )
    gaps = sorted(
        {(c["path"], c["client"], c["era"], c["unavailable"]) for c in cells if c.get("unavailable")}
    )
    if gaps:
        note += "\nNot measured (—):\n" + "".join(f"- {p} {cl} {e}: {w}\n" for p, cl, e, w in gaps)
    data = {
        "benchmark": "proxy",
        "timestamp": stamp,
        "command": "python bench/proxy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_facts(),
        "config": {
            "calls_at_c1": args.calls,
            "concurrency": concurrencies,
            "eras": eras,
            "clients": clients,
            "rounds": args.rounds,
            "aggregate": "median of interleaved rounds",
            "max_seconds_per_cell": args.max_seconds,
            "warmup_calls": args.warmup,
            "wait_quiet_s": args.wait_quiet,
            "upstream_response": "json" if args.json_upstream else "sse",
            "lean_calls": not args.no_lean_calls,
            "fast_path": not args.no_fast_path,
            "pinned": args.pin,
            "gateway": "mcp-gateway serve; sqlite audit (WAL, synchronous=FULL); 1 grant; 1 vault secret",
            "floor": f"bench/floor_forwarder.py (--pool {args.floor_pool})" if args.floor else None,
            "peers": _peer_versions() if args.peers else None,
        },
        "errors": errors,
        "cells": cells,
    }
    md = (
        f"## Proxy: direct, floor, governed gateway, peers ({stamp})\n\n"
        f"Medians of {args.rounds} interleaved rounds. Cells: calls/s (x direct); *fwd CPU ms*: CPU per call "
        "of the process in front of the echo (gateway, floor or peer).\n\n"
        f"{summary(cells, clients, eras, concurrencies)}\n{peer_ratios(cells)}\n### every cell\n\n"
        f"{markdown(cells)}{note}"
    )
    result_path = write_results("proxy", data, md, stamp)
    print()
    print(md)
    print(f"results: {result_path}")
    if errors:
        print(f"WARNING: {errors} calls failed", file=sys.stderr)
        return 1
    return 0


def _peer_versions() -> dict[str, str]:
    from peers import PEERS

    return {p.name: p.version for p in PEERS}


if __name__ == "__main__":
    sys.exit(main())
