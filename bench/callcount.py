"""Python function calls per governed call: a load-independent meter for the diet (issue 18).

CPU per call swings by ±30 % on a shared 2-core machine; the number of Python function calls the
gateway makes per governed call does not. This benchmark starts the echo upstream and the gateway
(``mcp-gateway serve``, unchanged, but started through this file so ``cProfile`` can be switched on
and off by signal), warms up, then profiles exactly ``--calls`` governed calls in each era and
concurrency, driven by the lean raw client (its CPU is not measured here). Every thread the gateway
runs Python in is profiled: the event loop thread and the audit writer thread.

It reports, per governed call: Python function calls (cProfile's count, C functions included), the
profiler's own time (inflated by the profiler, good for ranking only), and where the calls go, by
package and by function. Before and after a change: the count moves only when the code does.

Run: ``python bench/callcount.py [--calls 2000] [--eras legacy,modern] [--concurrency 1,8]
[--builtin] [--top 40]``; results: ``bench/results/callcount-<UTC>.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import signal
import sys
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


# ---- the gateway side: `callcount.py --serve CONFIG OUTDIR` ---------------------------------------


def serve(config: str, outdir: Path) -> None:
    """Run ``mcp-gateway serve -c config``; SIGUSR1 starts profiling, SIGUSR2 stops and dumps."""
    lock = threading.Lock()
    state: dict[str, Any] = {"on": False, "round": 0, "profiles": {}}

    def profile_for_thread() -> cProfile.Profile:
        with lock:
            profiles: dict[int, cProfile.Profile] = state["profiles"]
            return profiles.setdefault(threading.get_ident(), cProfile.Profile())

    # The audit writer thread: each job it takes while profiling is on runs under its profile.
    from mcp_gateway.audit import writer

    original_serve = writer.SinkWriter._serve

    def patched_serve(self: Any) -> None:
        real_queue = self._queue

        class ProfilingQueue:
            def get(self, timeout: float | None = None) -> Any:
                loop, future, func, arg = real_queue.get(timeout=timeout)
                if not state["on"]:
                    return loop, future, func, arg
                profile = profile_for_thread()
                return loop, future, lambda a: profile.runcall(func, a), arg

            def empty(self) -> bool:
                return bool(real_queue.empty())

            def put(self, item: Any) -> None:
                real_queue.put(item)

        self._queue = ProfilingQueue()
        try:
            original_serve(self)
        finally:
            self._queue = real_queue

    writer.SinkWriter._serve = patched_serve  # type: ignore[method-assign]

    def start(signum: int, frame: object) -> None:
        state["on"] = True
        profile_for_thread().enable()  # signal handlers run in the main (event loop) thread
        (outdir / f"on-{state['round']}").write_text("on")

    def stop(signum: int, frame: object) -> None:
        profile_for_thread().disable()
        state["on"] = False
        with lock:
            profiles, state["profiles"] = state["profiles"], {}
        stats: pstats.Stats | None = None
        for profile in profiles.values():
            profile.create_stats()
            if not profile.stats:  # type: ignore[attr-defined]
                continue
            if stats is None:
                stats = pstats.Stats(profile)
            else:
                stats.add(profile)
        if stats is not None:
            stats.dump_stats(str(outdir / f"round-{state['round']}.prof"))
        (outdir / f"off-{state['round']}").write_text("off")
        state["round"] += 1

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from mcp_gateway.cli import main

    sys.argv = ["mcp-gateway", "serve", "-c", config]
    main()


# ---- the driver ----------------------------------------------------------------------------------


def _group(filename: str) -> str:
    """A package-level label for a profiled function's file."""
    if filename == "~":
        return "C builtins"
    path = filename.replace("\\", "/")
    if "/mcp_gateway/" in path:
        tail = path.split("/mcp_gateway/", 1)[1]
        return "mcp_gateway/" + tail.split("/", 1)[0].removesuffix(".py")
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in path:
            rest = path.split(marker, 1)[1].lstrip("/")
            if marker == "/lib/python3":
                rest = rest.split("/", 1)[1] if "/" in rest else rest
                return "stdlib/" + rest.split("/", 1)[0].removesuffix(".py")
            return rest.split("/", 1)[0].removesuffix(".py")
    return path.rsplit("/", 1)[-1]


def _label(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    short = filename.split("/site-packages/", 1)[-1].split("/src/", 1)[-1]
    if "/lib/python3" in short:
        short = short.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return f"{name} ({short}:{line})"


def summarise(prof: Path, calls: int, top: int) -> dict[str, Any]:
    stats = pstats.Stats(str(prof))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total_calls = sum(v[1] for v in raw.values())
    total_time = sum(v[2] for v in raw.values())
    groups: dict[str, list[float]] = {}
    for func, (_cc, nc, tt, _ct, _callers) in raw.items():
        g = groups.setdefault(_group(func[0]), [0, 0.0])
        g[0] += nc
        g[1] += tt
    by_calls = sorted(raw.items(), key=lambda kv: -kv[1][1])[:top]
    by_time = sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]
    return {
        "calls": calls,
        "function_calls_per_call": total_calls / calls,
        "profiled_us_per_call": total_time / calls * 1e6,
        "groups": {
            name: {"function_calls_per_call": v[0] / calls, "profiled_us_per_call": v[1] / calls * 1e6}
            for name, v in sorted(groups.items(), key=lambda kv: -kv[1][0])
        },
        "top_by_calls": [(_label(f), v[1] / calls, v[2] / calls * 1e6) for f, v in by_calls],
        "top_by_time": [(_label(f), v[1] / calls, v[2] / calls * 1e6) for f, v in by_time],
    }


def drive(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(HERE))
    import tempfile

    from common import (
        BUILTIN_TOOL,
        TOOL,
        UPSTREAM_NAME,
        md_table,
        running_stack,
        timestamp,
        wait_until,
        write_results,
    )
    from loadgen import WorkerSpec, run_cell

    stamp = timestamp()
    cells: list[dict[str, Any]] = []
    with running_stack(start_gateway=False) as stack, tempfile.TemporaryDirectory() as out:
        outdir = Path(out)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
        stack.gateway = stack.group.spawn(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(stack.config_path), out],
            log=stack.gateway_log,
            env=env,
        )
        base = stack.gateway_url.rsplit("/", 1)[0]
        import httpx

        def ready() -> bool:
            if stack.gateway is not None and stack.gateway.poll() is not None:
                raise RuntimeError(Path(stack.gateway_log).read_text()[-3000:])
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{base}/readyz", timeout=1.0).status_code == 200
            return False

        wait_until(ready, 60, "the gateway")
        tool = BUILTIN_TOOL if args.builtin else f"{UPSTREAM_NAME}.{TOOL}"
        pid = stack.gateway.pid
        round_no = 0
        for era in args.eras.split(","):
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                marks = (outdir / f"on-{round_no}", outdir / f"off-{round_no}")

                def on_start(marks: tuple[Path, Path] = marks) -> None:
                    os.kill(pid, signal.SIGUSR1)
                    wait_until(marks[0].exists, 10, "profiling on")

                def on_end(marks: tuple[Path, Path] = marks) -> None:
                    os.kill(pid, signal.SIGUSR2)
                    wait_until(marks[1].exists, 60, "profile dump")

                def spec_for(i: int, era: str = era, concurrency: int = concurrency) -> WorkerSpec:
                    return WorkerSpec(
                        stack.gateway_url,
                        era,
                        tool,
                        f"Bearer {stack.token}",
                        concurrency,
                        args.calls,
                        args.warmup,
                        600.0,
                        "raw",
                    )

                results, _wall = run_cell(spec_for, 1, on_start=on_start, on_end=on_end)
                done = sum(len(r.latencies_ns) for r in results)
                errors = sum(r.errors for r in results) + sum(bool(r.setup_error) for r in results)
                if errors:
                    samples = [
                        s
                        for r in results
                        for s in ([r.setup_error] if r.setup_error else []) + r.error_samples
                    ]
                    log = Path(stack.gateway_log).read_text()[-3000:]
                    raise RuntimeError(f"{era} C={concurrency}: {errors} errors: {samples[:3]}\n{log}")
                prof = outdir / f"round-{round_no}.prof"
                summary = summarise(prof, done, args.top)
                if args.keep:
                    Path(args.keep).mkdir(parents=True, exist_ok=True)
                    prof.rename(Path(args.keep) / f"{stamp}-{era}-c{concurrency}.prof")
                summary.update(era=era, concurrency=concurrency, tool=tool)
                cells.append(summary)
                print(
                    f"{era} C={concurrency}: {summary['function_calls_per_call']:.0f} function calls/call,"
                    f" {summary['profiled_us_per_call']:.0f} µs under the profiler",
                    flush=True,
                )
                round_no += 1
    lines = [f"## Python function calls per governed call ({stamp})", ""]
    lines.append(
        f"`.venv/bin/python bench/callcount.py --calls {args.calls} --eras {args.eras}"
        f" --concurrency {args.concurrency}{' --builtin' if args.builtin else ''}`; tool `{tool}`;"
        " raw client; cProfile over the loop and audit writer threads.\n"
    )
    lines.append(
        md_table(
            ["era", "C", "function calls / call", "profiled µs / call"],
            [
                [
                    c["era"],
                    str(c["concurrency"]),
                    f"{c['function_calls_per_call']:.0f}",
                    f"{c['profiled_us_per_call']:.0f}",
                ]
                for c in cells
            ],
        )
    )
    for c in cells:
        lines += ["", f"### {c['era']} C={c['concurrency']}: by package", ""]
        lines.append(
            md_table(
                ["package", "calls / call", "profiled µs / call"],
                [
                    [name, f"{v['function_calls_per_call']:.1f}", f"{v['profiled_us_per_call']:.1f}"]
                    for name, v in c["groups"].items()
                ],
            )
        )
        lines += ["", f"### {c['era']} C={c['concurrency']}: top functions by calls", ""]
        lines.append(
            md_table(
                ["function", "calls / call", "profiled µs / call"],
                [[name, f"{n:.2f}", f"{t:.1f}"] for name, n, t in c["top_by_calls"]],
            )
        )
        lines += ["", f"### {c['era']} C={c['concurrency']}: top functions by own time", ""]
        lines.append(
            md_table(
                ["function", "calls / call", "profiled µs / call"],
                [[name, f"{n:.2f}", f"{t:.1f}"] for name, n, t in c["top_by_time"]],
            )
        )
    markdown = "\n".join(lines) + "\n"
    path = write_results("callcount", {"cells": cells, "args": vars(args)}, markdown, stamp)
    print(markdown if args.print else f"results: {path}")
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2], Path(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--calls", type=int, default=2000, help="governed calls profiled per cell")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--eras", default="legacy,modern")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--builtin", action="store_true", help="the built-in gateway.echo, no upstream")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--print", action="store_true", help="print the Markdown report")
    parser.add_argument("--keep", metavar="DIR", help="keep each cell's cProfile file in DIR (pstats)")
    args = parser.parse_args()
    return drive(args)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
