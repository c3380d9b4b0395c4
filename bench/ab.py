"""Interleaved A/B of two gateway source trees: the working tree (or ``--new REV``) against a git revision.

On a shared machine two separate benchmark runs are not comparable (other work moves CPU per call
by ±30 %). Here both gateways run at once, in front of the same echo upstream, each with its own
data directory; cells alternate between them (A B, then B A, ...), and each cell's figure is
compared with its partner's from the same moment: the paired ratio new ÷ base. Medians of the
pairs are reported, with their range.

The base tree is ``git worktree add --detach`` of ``--base`` in a temp dir, served with
``PYTHONPATH=<worktree>/src`` (the working tree's virtualenv, so both use the same libraries).
Figures per cell: the gateway process's CPU per call (from /proc) and calls/s; the load generator is
``--client`` (``raw`` by default: it costs the machine least, so the gateways' CPU shows best).

Run: ``python bench/ab.py [--base HEAD] [--eras legacy,modern] [--concurrency 1,8] [--pairs 7]
[--seconds 3] [--client raw|sdk] [--builtin]``; results: ``bench/results/ab-<UTC>.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    BUILTIN_TOOL,
    ROOT,
    TOOL,
    UPSTREAM_NAME,
    UPSTREAM_SCRIPT,
    Group,
    free_port,
    gateway_command,
    md_table,
    port_open,
    prepare_gateway_dir,
    proc_cpu_seconds,
    system_busy_seconds,
    tail,
    timestamp,
    wait_until,
    write_results,
)
from loadgen import WorkerSpec, default_workers, run_cell, split


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def worktree(rev: str) -> Any:
    """A detached git worktree of ``rev`` in a temp dir, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="mcp-gateway-ab-") as tmp:
        path = Path(tmp) / "base"
        _git("worktree", "add", "--detach", "--quiet", str(path), rev)
        try:
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)


def _ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_gateway(
    group: Group, workdir: Path, upstream_port: int, src: Path | None
) -> tuple[subprocess.Popen[bytes], str, str]:
    """A gateway over ``workdir`` (source from ``src``, or the installed tree); its process, URL, token."""
    port = free_port()
    token = prepare_gateway_dir(workdir, gateway_port=port, upstream_port=upstream_port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    log = workdir / "gateway.log"
    proc = group.spawn([*gateway_command(), "serve", "-c", str(workdir / "gateway.yaml")], log=log, env=env)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{tail(log)}")
        return _ready(f"http://127.0.0.1:{port}/readyz")

    wait_until(ready, 60, f"the gateway in {workdir}")
    return proc, f"http://127.0.0.1:{port}/mcp", token


def cell(
    proc: subprocess.Popen[bytes], url: str, token: str, tool: str, era: str, concurrency: int, args: Any
) -> dict[str, float]:
    """One cell against one gateway: CPU ms per call of the gateway process, calls/s, other load."""
    workers = min(default_workers(concurrency), concurrency)
    conns = split(concurrency, workers)
    calls = split(100_000, workers)
    marks: dict[str, list[float]] = {"cpu": [], "machine": [], "wall": []}

    def snapshot() -> None:
        marks["cpu"].append(proc_cpu_seconds(proc.pid))
        marks["machine"].append(system_busy_seconds())
        marks["wall"].append(time.monotonic())

    def spec_for(i: int) -> WorkerSpec:
        return WorkerSpec(
            url, era, tool, f"Bearer {token}", conns[i], calls[i], 50, args.seconds, args.client
        )

    results, _ = run_cell(spec_for, workers, on_start=snapshot, on_end=snapshot)
    errors = sum(r.errors for r in results) + sum(1 for r in results if r.setup_error)
    if errors:
        samples = [s for r in results for s in ([r.setup_error] if r.setup_error else []) + r.error_samples]
        raise RuntimeError(f"{era} C={concurrency}: {errors} failed calls: {samples[:3]}")
    done = sum(len(r.latencies_ns) for r in results)
    wall = marks["wall"][1] - marks["wall"][0]
    gateway = marks["cpu"][1] - marks["cpu"][0]
    clients = sum(r.cpu_s for r in results)
    machine = marks["machine"][1] - marks["machine"][0]
    return {
        "cpu_ms": gateway / done * 1e3,
        "calls_per_s": done / wall,
        "calls": done,
        # Busy CPU of everything else (the other gateway idles; the upstream is shared): noise.
        "other_cores": max(0.0, (machine - gateway - clients) / wall),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--base", default="HEAD", help="the git revision to compare with (default HEAD)")
    parser.add_argument("--new", help="a git revision to compare instead of the working tree")
    parser.add_argument(
        "--new-tree", metavar="DIR", help="a source tree (with src/) to compare instead, e.g. a compiled copy"
    )
    parser.add_argument("--eras", default="legacy,modern")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per cell")
    parser.add_argument("--client", default="raw", choices=["raw", "sdk"])
    parser.add_argument("--builtin", action="store_true", help="the built-in gateway.echo, no upstream")
    args = parser.parse_args()
    stamp = timestamp()
    base_rev = _git("rev-parse", "--short", args.base)
    tool = BUILTIN_TOOL if args.builtin else f"{UPSTREAM_NAME}.{TOOL}"
    eras = args.eras.split(",")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    pairs: dict[str, list[dict[str, dict[str, float]]]] = {}
    group = Group()
    new_name = _git("rev-parse", "--short", args.new) if args.new else args.new_tree or "the working tree"
    with (
        worktree(args.base) as base_tree,
        worktree(args.new) if args.new else contextlib.nullcontext(Path(args.new_tree or ROOT)) as new_tree,
        tempfile.TemporaryDirectory(prefix="mcp-gateway-ab-") as tmp,
    ):
        try:
            up_port = free_port()
            upstream = group.spawn(
                [sys.executable, str(UPSTREAM_SCRIPT), "--port", str(up_port)], log=Path(tmp) / "upstream.log"
            )
            wait_until(lambda: upstream.poll() is None and port_open(up_port), 30, "the upstream")
            gateways = {
                "base": start_gateway(group, Path(tmp) / "base", up_port, base_tree / "src"),
                "new": start_gateway(group, Path(tmp) / "new", up_port, new_tree / "src"),
            }
            for n in range(args.pairs):
                for era in eras:
                    for c in concurrencies:
                        key = f"{era} C={c}"
                        order = ("base", "new") if n % 2 == 0 else ("new", "base")
                        pair = {name: cell(*gateways[name], tool, era, c, args) for name in order}
                        pairs.setdefault(key, []).append(pair)
                        print(
                            f"pair {n + 1}/{args.pairs} {key}: base {pair['base']['cpu_ms']:.3f} ms,"
                            f" new {pair['new']['cpu_ms']:.3f} ms per call",
                            flush=True,
                        )
        finally:
            group.close()
    rows, summary = [], {}
    for key, items in pairs.items():
        cpu_ratio = [p["new"]["cpu_ms"] / p["base"]["cpu_ms"] for p in items]
        rate_ratio = [p["new"]["calls_per_s"] / p["base"]["calls_per_s"] for p in items]
        base_cpu = statistics.median(p["base"]["cpu_ms"] for p in items)
        new_cpu = statistics.median(p["new"]["cpu_ms"] for p in items)
        other = statistics.median(p[s]["other_cores"] for p in items for s in ("base", "new"))
        summary[key] = {
            "base_cpu_ms": base_cpu,
            "new_cpu_ms": new_cpu,
            "cpu_ratio_median": statistics.median(cpu_ratio),
            "cpu_ratio_range": [min(cpu_ratio), max(cpu_ratio)],
            "rate_ratio_median": statistics.median(rate_ratio),
            "other_cores_median": other,
        }
        rows.append(
            [
                key,
                f"{base_cpu:.3f}",
                f"{new_cpu:.3f}",
                f"{statistics.median(cpu_ratio):.2f} ({min(cpu_ratio):.2f} to {max(cpu_ratio):.2f})",
                f"{statistics.median(rate_ratio):.2f}",
                f"{other:.2f}",
            ]
        )
    command = (
        f"`.venv/bin/python bench/ab.py --base {args.base}{f' --new {args.new}' if args.new else ''}"
        f"{f' --new-tree {args.new_tree}' if args.new_tree else ''}"
        f" --eras {args.eras}"
        f" --concurrency {args.concurrency} --pairs {args.pairs}"
        f" --seconds {args.seconds:g} --client {args.client}"
        f"{' --builtin' if args.builtin else ''}`"
    )
    markdown = (
        f"## A/B: {new_name} against {base_rev} ({stamp})\n\n{command}; tool `{tool}`; medians of"
        f" {args.pairs} interleaved pairs.\n\n"
        + md_table(
            [
                "cell",
                "base CPU ms/call",
                "new CPU ms/call",
                "CPU new ÷ base (range)",
                "calls/s new ÷ base",
                "other load (cores)",
            ],
            rows,
        )
        + "\n"
    )
    data = {"base": base_rev, "new": new_name, "args": vars(args), "summary": summary, "pairs": pairs}
    path = write_results("ab", data, markdown, stamp)
    print(markdown)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
