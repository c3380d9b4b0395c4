"""Where the gateway's per-call CPU goes: py-spy samples of the gateway (and the upstream) under load.

For each era it drives C=8 through the gateway and samples the gateway process twice (two passes,
so one sampler at a time): ``--gil`` (only the thread holding the GIL: Python CPU time) and default
(every thread that is not idle: also syscalls that release the GIL, such as the audit fsync and
socket sends). The upstream is sampled alongside, as the reference cost of a bare SDK server.

Each sample is charged to a *component*: the nearest frame up the stack (from the leaf) that
belongs to code with a purpose (gateway modules, the SDK's client or server path, the HTTP server,
OpenTelemetry), skipping generic libraries (pydantic, json, asyncio, anyio, contextlib...); and to
a *kind*: the library of the leaf frame (what the CPU was actually doing).

Run: ``python bench/profile_gateway.py [--seconds 10] [--rate 100] [--eras legacy,modern] [--flamegraph]``
Needs ``py-spy`` (``.venv/bin/pip install py-spy``). Writes ``bench/results/profile-<timestamp>.txt``,
the raw stacks in ``bench/results/profile-<timestamp>/`` (not kept in git) and, with ``--flamegraph``,
an SVG flame graph of each pass, ``bench/results/flame-<timestamp>-<process>-<era>-<pass>.svg``
(``flamegraph.py``; open it in a browser, hover a box for its share).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    BUILTIN_TOOL,
    RESULTS,
    UPSTREAM_NAME,
    Stack,
    machine_facts,
    proc_cpu_seconds,
    running_stack,
    timestamp,
)
from flamegraph import write_svg
from loadgen import WorkerSpec, default_workers, run_cell, split

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*):(?P<line>\d+)\)$")
SITE = re.compile(r"/site-packages/(?P<rest>.*)$")
STDLIB = re.compile(r"/lib/python3\.\d+/(?P<rest>.*)$")

# Generic code: a sample in here is charged to whoever called it.
GENERIC_PREFIXES = (
    "pydantic",
    "pydantic_core",
    "json",
    "asyncio",
    "anyio",
    "contextlib",
    "typing",
    "functools",
    "re",
    "sqlite3",
    "threading",
    "queue",
    "selectors",
    "socket",
    "ssl",
    "enum",
    "dataclasses",
    "abc",
    "copy",
    "uuid",
    "hashlib",
    "hmac",
    "base64",
    "logging",
    "weakref",
    "collections",
    "sniffio",
    "mcp_types",
    "mcp/shared",
    "jsonschema",
    "referencing",
    "rpds",
    "attr",
    "attrs",
    "urllib",
    "email",
    "http",
    "idna",
    "typing_extensions",
    "_weakrefset",
    "<frozen",
)

COMPONENTS: list[tuple[str, str]] = [
    ("mcp_gateway/identity/agents.py", "gateway: auth token lookup (agents.py, sqlite)"),
    ("mcp_gateway/http/app.py", "gateway: http/app.py (MCP handlers)"),
    ("mcp_gateway/http/modern.py", "gateway: http front door (modern.py, legacy.py, session.py)"),
    ("mcp_gateway/http/legacy.py", "gateway: http front door (modern.py, legacy.py, session.py)"),
    ("mcp_gateway/http/session", "gateway: http front door (modern.py, legacy.py, session.py)"),
    ("mcp_gateway/http/methods.py", "gateway: method table (methods.py: validation, result shaping)"),
    ("mcp_gateway/http/reply.py", "gateway: reply (reply.py: JSON/SSE answer)"),
    ("mcp_gateway/http/egress.py", "gateway: egress scrubber (egress.py)"),
    ("mcp_gateway/http/auth.py", "gateway: auth middleware (http/auth.py)"),
    ("mcp_gateway/core/governed.py", "gateway: governed skeleton (governed.py, result.py)"),
    ("mcp_gateway/core/result.py", "gateway: governed skeleton (governed.py, result.py)"),
    ("mcp_gateway/telemetry/", "gateway: telemetry (off: should be ~0)"),
    ("mcp_gateway/wire.py", "gateway: wire JSON (wire.py: orjson)"),
    ("mcp_gateway/core/limits.py", "gateway: limits (argument size and depth, result checks)"),
    ("mcp_gateway/core/state.py", "gateway: vault (SecretsView refresh, sqlite generation check)"),
    ("mcp_gateway/policy/", "gateway: policy evaluate"),
    ("mcp_gateway/redact.py", "gateway: redaction"),
    ("mcp_gateway/vault/", "gateway: vault (SecretsView refresh, sqlite generation check)"),
    ("mcp_gateway/audit/log.py", "gateway: audit group commit (log.py, on the loop)"),
    ("mcp_gateway/audit/sqlite.py", "gateway: audit sink (sqlite insert + commit/fsync)"),
    ("mcp_gateway/audit/record.py", "gateway: audit record (normalize, chain, sha256)"),
    (
        "mcp_gateway/connectors/mcp/http_client.py",
        "gateway: lean HTTP client to the upstream (connectors/mcp/http_client.py)",
    ),
    ("mcp_gateway/connectors/", "gateway: upstream connector (connectors/mcp/upstream.py, forwarder.py)"),
    ("mcp_gateway/core/gateway.py", "gateway: call path (core/gateway.py: pydantic result, digest, spans)"),
    ("mcp_gateway/", "gateway: other modules"),
    ("mcp/client/", "SDK client path to the upstream (mcp.client)"),
    ("httpx2/", "SDK client path to the upstream (httpx2/httpcore2)"),
    ("httpcore2/", "SDK client path to the upstream (httpx2/httpcore2)"),
    ("opentelemetry/", "OpenTelemetry (SDK _otel middleware + gateway span)"),
    ("mcp/server/", "SDK server path (mcp.server: transport, runner, dispatch)"),
    ("starlette/", "HTTP server (uvicorn + h11 + starlette)"),
    ("uvicorn/", "HTTP server (uvicorn + h11 + starlette)"),
    ("h11/", "HTTP server (uvicorn + h11 + starlette)"),
    ("sse_starlette/", "SDK server path (mcp.server: transport, runner, dispatch)"),
]

KINDS: list[tuple[str, str]] = [
    ("pydantic", "pydantic validate/dump"),
    ("json", "json encode/decode"),
    ("asyncio/selector_events", "socket send/recv (asyncio transports)"),
    ("asyncio", "asyncio event loop"),
    ("selectors", "asyncio event loop"),
    ("anyio", "anyio (task groups, cancel scopes, streams, to_thread)"),
    ("threading", "threads (locks, conditions)"),
    ("queue", "threads (locks, conditions)"),
    ("opentelemetry", "OpenTelemetry"),
    ("h11", "HTTP parsing/serialising (h11)"),
    ("httpcore2", "httpx2/httpcore2"),
    ("httpx2", "httpx2/httpcore2"),
    ("uvicorn", "uvicorn"),
    ("starlette", "starlette"),
    ("re", "regex"),
    ("hashlib", "hashing"),
    ("hmac", "hashing"),
    ("logging", "logging"),
    ("contextlib", "contextlib"),
    ("mcp_gateway/audit/sqlite", "sqlite calls (audit)"),
    ("mcp_gateway/agents", "sqlite calls (agents)"),
    ("mcp_gateway/vault/store", "sqlite calls (vault)"),
    ("mcp/", "SDK code itself"),
    ("mcp_types", "SDK code itself"),
    ("mcp_gateway", "gateway code itself"),
]

# Frames every sample of a thread passes through; they say nothing about where the time goes.
BOILERPLATE = (
    "(typer/",
    "(mcp_gateway/cli/",
    "(mcp_gateway/app/runner.py",
    "(uvicorn/server.py",
    "(uvicorn/_compat.py",
    "(asyncio/runners.py",
    "(asyncio/base_events.py",
    "bin/mcp-gateway",
    "bench/upstream_echo.py",
    "(threading.py",
    "Handle._run (asyncio/events.py",
    "(uvicorn/main.py",
)

WATCH = [
    ("auth: AgentTokens.verify", "AgentTokens.verify"),
    ("policy: evaluate", "evaluate (" + "mcp_gateway/policy"),
    ("SecretsView.redactor / _refresh", "SecretsView.redactor"),
    ("vault generation() sqlite query", "_SQLSecretStore.generation"),
    ("redaction: Redactor.scrub_json", "Redactor.scrub_json"),
    ("audit: AuditLog.append (loop side)", "AuditLog.append"),
    ("audit: SQLiteAuditSink.append (thread)", "SQLiteAuditSink.append"),
    ("audit: normalize_event", "normalize_event"),
    ("audit: digest(result)", "digest (" + "mcp_gateway/audit"),
    ("gateway: Gateway.call_tool", "Gateway.call_tool"),
    ("gateway: Gateway._tool (list_tools model_dump compare)", "Gateway._tool"),
    ("gateway: list_tools", "Gateway.list_tools"),
    ("upstream: UpstreamConnection.call", "UpstreamConnection.call"),
    ("SDK client: Client.call_tool", "Client.call_tool"),
    ("SDK client: streamable_http post_writer", "post_writer"),
    ("governed: Governor.run", "Governor.run"),
    ("governed: settle (result check, scrub, digest)", "settle (" + "mcp_gateway/core"),
    ("egress: whole-message scrubber", "mcp_gateway/http/egress"),
    ("telemetry (any, off by default)", "mcp_gateway/telemetry"),
    ("SDK server: TransportSecurityMiddleware", "TransportSecurityMiddleware"),
    ("OpenTelemetry (any)", "opentelemetry/"),
    ("pydantic (any)", "/pydantic"),
    ("json (any)", "/json/"),
]


def _short(file: str) -> str:
    for pattern in (SITE, STDLIB):
        match = pattern.search(file)
        if match:
            return match.group("rest")
    marker = "/src/"
    return file.split(marker, 1)[1] if marker in file else file


@dataclass
class Frame:
    func: str
    file: str
    line: str

    @property
    def label(self) -> str:
        return f"{self.func} ({self.file}:{self.line})"


@dataclass
class Profile:
    samples: list[tuple[list[Frame], int]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(n for _, n in self.samples)

    @classmethod
    def load(cls, path: Path) -> Profile:
        prof = cls()
        for raw in path.read_text(errors="replace").splitlines():
            stack, _, count = raw.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = []
            for part in stack.split(";"):
                match = FRAME.match(part)
                if match:
                    frames.append(Frame(match["func"], _short(match["file"]), match["line"]))
                elif part:
                    frames.append(Frame(part, "", "0"))
            prof.samples.append((frames, int(count)))
        return prof


def _generic(file: str) -> bool:
    return file.startswith(GENERIC_PREFIXES) or file == ""


def component_of(frames: list[Frame]) -> str:
    for frame in reversed(frames):
        if _generic(frame.file):
            continue
        for prefix, name in COMPONENTS:
            if frame.file.startswith(prefix):
                return name
        return f"other: {frame.file.split('/')[0]}"
    files = {f.file.split("/")[0] for f in frames}
    if any(f.file.startswith("threading") for f in frames) and "asyncio" not in files:
        return "worker threads waiting/handing off (anyio to_thread)"
    return "event loop & scheduling (no app frame)"


def kind_of(frames: list[Frame]) -> str:
    leaf = frames[-1].file if frames else ""
    for prefix, name in KINDS:
        if leaf.startswith(prefix):
            return name
    return f"other: {leaf.split('/')[0] or '?'}"


def _table(counter: collections.Counter[str], total: int, cpu_ms: float | None, width: int = 68) -> str:
    lines = []
    for name, count in counter.most_common():
        share = count / total if total else 0.0
        est = f"  ~{share * cpu_ms:5.2f} ms/call" if cpu_ms else ""
        lines.append(f"  {100 * share:5.1f}%  {name:<{width}}{est}")
    return "\n".join(lines)


def summarize(
    prof: Profile, title: str, cpu_ms: float | None, ms_per_sample: float | None, top: int = 25
) -> str:
    """The component/kind/watch/top tables of one sampled process.

    ``ms_per_sample`` (GIL pass only) turns sample counts into GIL-held milliseconds per call.
    """
    total = prof.total
    comp: collections.Counter[str] = collections.Counter()
    kind: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    watch: collections.Counter[str] = collections.Counter()
    for frames, n in prof.samples:
        comp[component_of(frames)] += n
        kind[kind_of(frames)] += n
        if frames:
            self_[frames[-1].label] += n
        labels = {f"{f.func} ({f.file})" for f in frames}
        for label in labels:
            incl[label] += n
        for name, needle in WATCH:
            if any(needle in label for label in labels):
                watch[name] += n
    for key in [k for k in incl if any(b in k for b in BOILERPLATE)]:
        del incl[key]
    watch_lines = [
        f"  {100 * watch[name] / total:5.1f}%  {name}" for name, _ in WATCH if watch[name] and total
    ]
    out = [
        f"=== {title}: {total} samples"
        + (f"; process CPU {cpu_ms:.2f} ms/call under the profiler (from /proc)" if cpu_ms else ""),
        "",
        "-- by component (who asked for the work)"
        + ("; ~ms/call = share x process CPU/call" if cpu_ms else ""),
        _table(comp, total, cpu_ms),
        "",
        "-- by kind (what the leaf frame was doing)",
        _table(kind, total, cpu_ms),
        "",
        "-- watched functions (inclusive share of samples)",
        *watch_lines,
        "",
        f"-- top {top} functions by self samples",
        _table(collections.Counter(dict(self_.most_common(top))), total, None, 100),
        "",
        f"-- top {top * 2} functions by inclusive samples (process/loop/thread boilerplate omitted)",
        _table(collections.Counter(dict(incl.most_common(top * 2))), total, None, 100),
        "",
    ]
    return "\n".join(out)


def record(py_spy: str, pid: int, out: Path, seconds: float, rate: int, gil: bool) -> subprocess.Popen[bytes]:
    cmd = [py_spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", str(rate), "-f", "raw"]
    cmd += ["-o", str(out), "--full-filenames"]
    if gil:
        cmd.append("--gil")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def profile_pass(
    stack: Stack,
    era: str,
    concurrency: int,
    seconds: float,
    rate: int,
    gil: bool,
    outdir: Path,
    py_spy: str,
    tool: str = f"{UPSTREAM_NAME}.echo",
) -> dict[str, object]:
    """Load the gateway at ``concurrency`` and sample it (and the upstream) for ``seconds``."""
    assert stack.gateway is not None
    tag = f"{era}-{'gil' if gil else 'active'}"
    files = {"gateway": outdir / f"gateway-{tag}.raw", "upstream": outdir / f"upstream-{tag}.raw"}
    spies: list[subprocess.Popen[bytes]] = []
    pids = {"gateway": stack.gateway.pid, "upstream": stack.upstream.pid}
    cpu: dict[str, list[float]] = {k: [] for k in pids}

    def start() -> None:
        for name, pid in pids.items():
            cpu[name].append(proc_cpu_seconds(pid))
            spies.append(record(py_spy, pid, files[name], seconds, rate, gil))

    def end() -> None:
        for name, pid in pids.items():
            cpu[name].append(proc_cpu_seconds(pid))

    workers = default_workers(concurrency)
    conns = split(concurrency, workers)

    def spec_for(i: int) -> WorkerSpec:
        return WorkerSpec(
            stack.gateway_url,
            era,
            tool,
            f"Bearer {stack.token}",
            conns[i],
            10**9,
            max(2, 40 // concurrency),
            seconds,
        )

    try:
        results, _ = run_cell(spec_for, workers, on_start=start, on_end=end)
    finally:
        for spy in spies:
            try:
                spy.wait(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(timeout=5)
    calls = sum(len(r.latencies_ns) for r in results)
    errors = sum(r.errors for r in results) + sum(1 for r in results if r.setup_error)
    started = [r.started for r in results if r.started]
    finished = [r.finished for r in results if r.finished]
    elapsed = max(finished) - min(started) if started and finished else 0.0
    cpu_ms = {k: 1000 * (v[1] - v[0]) / calls if calls and len(v) == 2 else None for k, v in cpu.items()}
    return {"files": files, "calls": calls, "errors": errors, "elapsed": elapsed, "cpu_ms": cpu_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="py-spy profile of the gateway under load")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--eras", default="legacy,modern")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--flamegraph",
        action="store_true",
        help="also write an SVG flame graph of each pass next to its raw stacks",
    )
    parser.add_argument(
        "--builtin",
        action="store_true",
        help=f"call the built-in `{BUILTIN_TOOL}` instead of the upstream echo",
    )
    args = parser.parse_args(argv)
    tool = BUILTIN_TOOL if args.builtin else f"{UPSTREAM_NAME}.echo"
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    stamp = timestamp()
    outdir = RESULTS / f"profile-{stamp}"
    outdir.mkdir(parents=True, exist_ok=True)
    facts = machine_facts()
    report = [
        f"Gateway profile of `{tool}` at C={args.concurrency}, {args.seconds:.0f} s per pass, "
        f"py-spy {args.rate} Hz ({stamp})",
        f"machine: {facts['nproc']} CPUs, {facts['cpu_model']}, Python {facts['python']}, "
        f"git {facts['git_commit']}{' +dirty src' if facts['git_dirty'] else ''}",
        "passes: 'gil' = samples of the GIL-holding thread only (Python CPU); 'active' = every non-idle",
        "thread (adds GIL-released syscalls: fsync in the audit thread, socket sends).",
        "",
    ]
    eras = [e.strip() for e in args.eras.split(",") if e.strip()]
    with running_stack() as stack:
        for era in eras:
            for gil in (True, False):
                res = profile_pass(
                    stack, era, args.concurrency, args.seconds, args.rate, gil, outdir, py_spy, tool
                )
                files = res["files"]
                cpu_ms = res["cpu_ms"]
                assert isinstance(files, dict) and isinstance(cpu_ms, dict)
                calls, elapsed = res["calls"], res["elapsed"]
                assert isinstance(calls, int) and isinstance(elapsed, float)
                head = (
                    f"##### era {era}, pass {'gil' if gil else 'active'}: {calls} calls in {elapsed:.1f} s "
                    f"({calls / elapsed if elapsed else 0:.0f} calls/s under the profiler), "
                    f"{res['errors']} errors"
                )
                print(head, flush=True)
                report.append(head)
                for name in ("gateway", "upstream"):
                    path = files[name]
                    if not path.exists():
                        report.append(f"(no samples for {name}: py-spy failed)")
                        continue
                    prof = Profile.load(path)
                    # Only the GIL pass is CPU-like enough to convert shares into ms per call.
                    title = f"{name} [{era}, {'gil' if gil else 'active'}]"
                    report.append(summarize(prof, title, cpu_ms[name] if gil else None, None, args.top))
                    if args.flamegraph:
                        svg = write_svg(
                            path,
                            f"{title} {tool} C={args.concurrency} ({stamp})",
                            RESULTS / f"flame-{stamp}-{path.stem}.svg",
                        )
                        report.append(f"flame graph: {svg}")
    text = "\n".join(report) + "\n"
    path = RESULTS / f"profile-{stamp}.txt"
    path.write_text(text, encoding="utf-8")
    print(text)
    print(f"results: {path} (raw stacks in {outdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
