"""Run every benchmark and write ``bench/results/latest.md``.

Run: ``python bench/run_all.py [--quick] [--profile]`` (about 3 minutes on 2 cores; ``--quick`` is a
smoke test of a minute, ``--profile`` adds the py-spy profile, about a minute more).
Each benchmark runs as its own process with the same interpreter; a failing one is reported in
``latest.md`` and makes the exit status non-zero, but does not stop the others.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import BENCH, RESULTS, machine_facts, timestamp, wait_for_quiet


def run(name: str, args: list[str], timeout: float) -> tuple[int, Path | None, float]:
    """Run ``bench/<name>.py args``, echoing its output; return (status, results path, seconds)."""
    cmd = [sys.executable, str(BENCH / f"{name}.py"), *args]
    print(f"\n$ {' '.join(cmd)}", flush=True)
    started = time.monotonic()
    result_path: Path | None = None
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        # A watchdog, so a hung benchmark cannot hang the run (its own clean-up runs on SIGTERM).
        watchdog = threading.Timer(timeout, proc.terminate)
        watchdog.start()
        try:
            for line in proc.stdout:
                print(line, end="", flush=True)
                if line.startswith("results: "):
                    result_path = Path(line.split(" ", 2)[1].strip())
            status = proc.wait(timeout=60)
        except BaseException:
            proc.kill()
            raise
        finally:
            watchdog.cancel()
    return status, result_path, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run all benchmarks; write bench/results/latest.md")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke test, not figures")
    parser.add_argument("--profile", action="store_true", help="also run the py-spy profile")
    parser.add_argument("--repeat", type=int, default=1, help="proxy: N interleaved rounds, medians")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each benchmark, wait up to this long for other work to use < 0.25 cores",
    )
    args = parser.parse_args(argv)
    quiet = ["--wait-quiet", str(min(args.wait_quiet, 30.0))] if args.wait_quiet > 0 else []
    # proxy.py defaults to 3 interleaved rounds; run_all keeps one unless --repeat asks for more.
    quiet += ["--rounds", str(max(1, args.repeat))]
    plan: list[tuple[str, list[str]]] = [
        ("proxy", (["--calls", "200", "--max-seconds", "3"] if args.quick else []) + quiet),
        ("micro", ["--quick"] if args.quick else []),
        ("process", ["--starts", "1", "--seconds", "2"] if args.quick else []),
    ]
    if args.profile:
        plan.append(("profile_gateway", ["--seconds", "4"] if args.quick else []))
    stamp = timestamp()
    facts = machine_facts()
    command = " ".join(["python bench/run_all.py", *(argv if argv is not None else sys.argv[1:])])
    sections = [
        f"# Benchmark results ({stamp})",
        "",
        f"Machine: {facts['nproc']} CPUs ({facts['cpu_model']}), Python {facts['python']}, "
        f"mcp {facts['versions'].get('mcp', '?')}, gateway git {facts['git_commit']}"
        f"{' (src modified)' if facts['git_dirty'] else ''}.",
        f"Command: `{command}`" + (" (**quick: smoke-test counts, not figures**)" if args.quick else ""),
        "",
    ]
    failed = []
    for name, extra in plan:
        if args.wait_quiet > 0:
            load = wait_for_quiet(args.wait_quiet)
            print(f"other load before {name}: {load:.2f} cores", flush=True)
            sections.append(f"<!-- other load before {name}: {load:.2f} cores -->")
        status, path, seconds = run(name, extra, timeout=900)
        if status != 0:
            failed.append(name)
        sections.append(f"<!-- {name}: exit {status}, {seconds:.0f} s -->")
        if path is None:
            sections.append(f"## {name}\n\n**failed before writing results (exit {status}).**\n")
            continue
        md = path.with_suffix(".md") if path.suffix == ".json" else path
        body = md.read_text(encoding="utf-8") if md.exists() else ""
        if path.suffix == ".txt":
            body = f"## Profile\n\nSee `{path.relative_to(BENCH.parent)}`.\n"
        sections.append(body)
        shown = " ".join([f"python bench/{name}.py", *extra])
        sections.append(f"Command: `{shown}`; data: `{path.name}`.\n")
        if status != 0:
            sections.append(f"**{name} exited with status {status}** (see above for errors).\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    latest = RESULTS / "latest.md"
    latest.write_text("\n".join(sections) + "\n", encoding="utf-8")
    print(f"\nwrote {latest}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
