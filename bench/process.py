"""Gateway process costs: start-to-ready time, idle memory, and peak memory under proxy load.

- start-to-ready: spawn ``mcp-gateway serve`` and poll ``/healthz`` (listening) and ``/readyz`` (200 and
  the upstream connected) every 5 ms; several starts, median reported;
- idle RSS: VmRSS one second after ready, no traffic;
- under load: the proxy load (both eras, C=8 and C=32) through the gateway; VmRSS sampled every 50 ms,
  and VmHWM (the kernel's peak RSS) at the end.

Run: ``python bench/process.py [--starts 3] [--seconds 5]``.
Writes ``bench/results/process-<timestamp>.json`` (+ ``.md``) and prints Markdown.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from typing import Any

from common import machine_facts, md_table, proc_memory_kib, running_stack, timestamp, write_results
from proxy import CellConfig, measure


def _mib(kib: int | float) -> str:
    return f"{kib / 1024:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gateway start-to-ready time and memory")
    parser.add_argument("--starts", type=int, default=3, help="how many cold starts to time")
    parser.add_argument("--seconds", type=float, default=5.0, help="load seconds per cell")
    args = parser.parse_args(argv)
    stamp = timestamp()
    data: dict[str, Any] = {"benchmark": "process", "timestamp": stamp, "machine": machine_facts()}
    with running_stack(start_gateway=False) as stack:
        starts = []
        for _ in range(max(1, args.starts)):
            starts.append(stack.start_gateway())
            stack.stop_gateway()
        timing = stack.start_gateway()
        starts.append(timing)
        assert stack.gateway is not None
        pid = stack.gateway.pid
        time.sleep(1.0)  # settle: the first second after ready is start-up, not idle
        idle = proc_memory_kib(pid)
        upstream_idle = proc_memory_kib(stack.upstream.pid)
        samples: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                try:
                    samples.append(proc_memory_kib(pid)["VmRSS"])
                except (OSError, KeyError):
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cells = []
        try:
            for era in ("legacy", "modern"):
                for concurrency in (8, 32):
                    cfg = CellConfig(calls=10**6, max_seconds=args.seconds, warmup=40)
                    cell = measure(stack, "gateway", era, concurrency, cfg)
                    cells.append(
                        {
                            k: cell[k]
                            for k in (
                                "era",
                                "concurrency",
                                "calls_ok",
                                "errors",
                                "error_samples",
                                "calls_per_s",
                            )
                        }
                    )
                    rate, errs = cell["calls_per_s"], cell["errors"]
                    print(f"load {era} C={concurrency}: {rate:.0f} calls/s, {errs} errors", flush=True)
        finally:
            stop.set()
            sampler.join(timeout=5)
        after = proc_memory_kib(pid)
        upstream_after = proc_memory_kib(stack.upstream.pid)
    ready = [s["ready_s"] for s in starts]
    listening = [s["listening_s"] for s in starts]
    errors = sum(c["errors"] for c in cells)
    data.update(
        {
            "starts": starts,
            "ready_s_median": round(statistics.median(ready), 3),
            "listening_s_median": round(statistics.median(listening), 3),
            "gateway_idle_kib": idle,
            "gateway_after_load_kib": after,
            "gateway_peak_sampled_rss_kib": max(samples) if samples else None,
            "upstream_idle_kib": upstream_idle,
            "upstream_after_load_kib": upstream_after,
            "load_cells": cells,
            "errors": errors,
        }
    )
    rows = [
        [
            "start → listening (/healthz 200)",
            f"{statistics.median(listening):.2f} s",
            f"{min(listening):.2f}-{max(listening):.2f} s over {len(starts)} starts",
        ],
        [
            "start → ready (/readyz 200, upstream connected)",
            f"{statistics.median(ready):.2f} s",
            f"{min(ready):.2f}-{max(ready):.2f} s over {len(starts)} starts",
        ],
        [
            "gateway idle RSS (VmRSS, 1 s after ready)",
            _mib(idle["VmRSS"]),
            f"VmHWM so far {_mib(idle['VmHWM'])}",
        ],
        [
            "gateway peak RSS under load (VmHWM)",
            _mib(after["VmHWM"]),
            f"max sampled VmRSS {_mib(max(samples)) if samples else '-'}; "
            f"VmRSS after load {_mib(after['VmRSS'])}",
        ],
        [
            "upstream (bare SDK server) RSS idle / peak",
            _mib(upstream_idle["VmRSS"]),
            f"VmHWM after load {_mib(upstream_after['VmHWM'])}",
        ],
    ]
    load = ", ".join(f"{c['era']} C={c['concurrency']} {c['calls_per_s']:.0f}/s" for c in cells)
    md = (
        f"## Gateway process ({stamp})\n\n"
        + md_table(["what", "value", "detail"], rows)
        + f"\nLoad: {load}, {args.seconds:.0f} s each"
        + (f"; **WARNING: {errors} calls failed**" if errors else "; no call failed")
        + ".\n"
    )
    path = write_results("process", data, md, stamp)
    print()
    print(md)
    print(f"results: {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
