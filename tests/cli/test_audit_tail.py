"""``mcp-gateway audit tail / query / export``: the columns a security team needs, filters that work,
clear errors, a bounded follow mode, and exports that cannot attack the reader."""

from __future__ import annotations

import csv
import io
import json
import os
import select
import signal
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.cli import app
from mcp_gateway.types import AuditEvent

runner = CliRunner()
EXE = Path(sys.executable).parent / "mcp-gateway"

EVENTS = [
    AuditEvent(
        kind="denied",
        call_id="c1",
        agent="analyst",
        tool="data.query",
        decision="deny",
        status="denied",
        detail={"reasons": ["writes are not allowed"], "token_id": "tokA1"},
    ),
    AuditEvent(kind="intent", call_id="c2", agent="analyst", tool="data.describe", decision="allow"),
    AuditEvent(
        kind="outcome", call_id="c2", agent="analyst", tool="data.describe", decision="allow", status="ok"
    ),
    AuditEvent(
        kind="auth_failure",
        decision="deny",
        status="unauthenticated",
        detail={"reason": "unknown token", "token_id": "tokZZ", "client": "10.9.8.7"},
    ),
    AuditEvent(
        kind="approval",
        agent="ops-bot",
        tool="ops.rerun_job",
        decision="allow",
        status="error",
        detail={"approver": "alice", "error": "the requester cannot approve", "admin_token_id": "adm1"},
    ),
    AuditEvent(kind="intent", call_id="c3", agent="ops-bot", tool="ops.rerun_job", decision="allow"),
]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text("version: 1\nagents: {}\n")
    path = tmp_path / "gateway.yaml"
    path.write_text("data_dir: data\npolicies: policies\n")
    _append(path, EVENTS)
    return path


def _append(config: Path, events: list[AuditEvent]) -> None:
    (config.parent / "data").mkdir(exist_ok=True)
    with SQLiteAuditSink(config.parent / "data" / "audit.db") as sink:
        sink.append(events)


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_tail_prints_a_header_and_the_reason_client_token_and_approver(config: Path) -> None:
    code, out, _ = _run("audit", "tail", "-c", str(config))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "SEQ", "TIME", "KIND", "AGENT", "TOOL", "DECISION", "STATUS", "CLIENT", "TOKEN", "APPROVER", "REASON"
    ]  # fmt: skip
    assert len(lines) == 1 + len(EVENTS)
    by_seq = {line.split()[0]: line for line in lines[1:]}
    assert "tokA1" in by_seq["1"] and "writes are not allowed" in by_seq["1"]
    assert "10.9.8.7" in by_seq["4"] and "tokZZ" in by_seq["4"] and "unknown token" in by_seq["4"]
    # The failed approval attempt says who tried, on what, and why it failed.
    approval = by_seq["5"].split()
    assert approval[3:7] == ["ops-bot", "ops.rerun_job", "allow", "error"]
    assert "alice" in approval and "adm1" in approval and "requester cannot approve" in by_seq["5"]


@pytest.mark.parametrize(
    ("args", "seqs"),
    [
        (["--tool", "data.*"], [1, 2, 3]),
        (["--tool", "*.rerun_job"], [5, 6]),
        (["--tool", "data.quer?"], [1]),
        (["--status", "ok"], [3]),
        (["--decision", "deny"], [1, 4]),
        (["--kind", "intent", "--agent", "ops-bot"], [6]),
    ],
)
def test_tail_filters_including_tool_globs_select_the_matching_records(
    config: Path, args: list[str], seqs: list[int]
) -> None:
    code, out, _ = _run("audit", "tail", "-c", str(config), "--json", *args)
    assert code == 0
    assert [json.loads(line)["seq"] for line in out.splitlines()] == seqs


def test_until_keeps_only_records_written_before_it(config: Path) -> None:
    code, out, _ = _run("audit", "query", "-c", str(config), "--json", "--until", "2000-01-01T00:00:00Z")
    assert code == 0 and out == ""
    code, _, err = _run("audit", "query", "-c", str(config), "--until", "next tuesday")
    assert code == 1 and "--until `next tuesday` is not a duration" in err
    code, out, _ = _run("audit", "query", "-c", str(config), "--json", "--since", "1h", "--until", "0s")
    assert code == 0 and len(out.splitlines()) == len(EVENTS)


def test_an_unknown_decision_exits_2_naming_the_allowed_values(config: Path) -> None:
    for command in ("tail", "query", "export"):
        code, out, err = _run("audit", command, "-c", str(config), "--decision", "maybe")
        assert code == 2 and out == ""
        assert "`maybe`" in err and "allow, deny, pending" in err


def test_a_bad_tool_glob_is_a_clear_error(config: Path) -> None:
    code, _, err = _run("audit", "tail", "-c", str(config), "--tool", "data.[q")
    assert code == 1 and "a `[` is not closed" in err


def test_control_characters_an_agent_chose_are_shown_escaped_not_sent_to_the_terminal(config: Path) -> None:
    _append(
        config, [AuditEvent(kind="denied", agent="a", tool="evil\x1b]0;pwned\x07\x1b[2J", decision="deny")]
    )
    code, out, _ = _run("audit", "tail", "-c", str(config), "-n", "1")
    assert code == 0 and "\x1b" not in out and "\x07" not in out
    assert "evil\\x1b]0;pwned\\x07\\x1b[2J" in out


def test_follow_prints_only_new_matching_records_and_stops_after_max_records(config: Path) -> None:
    from mcp_gateway.cli.audit_view import Filters, follow

    batches = [
        [AuditEvent(kind="intent", agent="x", tool="data.q"), AuditEvent(kind="intent", tool="ops.a")],
        [AuditEvent(kind="outcome", tool="ops.b"), AuditEvent(kind="outcome", tool="ops.c")],
    ]
    printed: list[list[int]] = []
    with SQLiteAuditSink(config.parent / "data" / "audit.db") as sink:

        def tick(_: float) -> bool:  # each poll's wait: the next records get written meanwhile
            sink.append(batches.pop(0))
            return False

        count = follow(
            sink,
            Filters(tool="ops.*"),
            len(EVENTS),
            lambda records: printed.append([r.seq for r in records]),
            interval=0.01,
            timeout=None,
            max_records=2,
            wait=tick,
        )
    assert count == 2 and printed == [[8], [9]]  # seq 7 is not ops.*, seq 10 is past the limit


def test_follow_stops_at_its_timeout(config: Path) -> None:
    code, out, _ = _run("audit", "tail", "-c", str(config), "-n", "1", "--follow", "--timeout", "0.1")
    assert code == 0 and len(out.splitlines()) == 2


def _line_within(proc: subprocess.Popen[str], seconds: float) -> str:
    """The next line ``proc`` prints, waiting at most ``seconds`` for it."""
    assert proc.stdout is not None
    if not select.select([proc.stdout], [], [], seconds)[0]:
        proc.kill()
        raise AssertionError(f"no line within {seconds} s; stderr: {proc.communicate()[1]!r}")
    return proc.stdout.readline()


@pytest.mark.e2e
def test_follow_in_a_real_process_ends_cleanly_on_one_ctrl_c(config: Path) -> None:
    proc = subprocess.Popen(
        [str(EXE), "audit", "tail", "-c", str(config), "-n", "0", "--follow", "--interval", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MCP_GATEWAY_MASTER_KEY": ""},
    )
    header = _line_within(proc, 120)  # printed (and flushed) once the starting point is read
    assert header.startswith("SEQ")
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"one Ctrl-C did not end it; stderr: {proc.communicate()[1]!r}") from None
    assert proc.returncode == 0 and "Traceback" not in err and out == ""


def _ctrl_c_where_python_cannot_raise() -> None:
    """Press Ctrl-C so that its handler runs inside a weakref callback, as when it lands while the
    garbage collector runs them (often, while modules import): a ``KeyboardInterrupt`` raised there
    is printed as "Exception ignored" and lost."""

    class Thing:
        pass

    thing = Thing()
    ref = weakref.ref(thing, lambda _: signal.raise_signal(signal.SIGINT))
    del thing
    assert ref() is None


def test_ctrl_c_while_follow_starts_ends_it_before_it_prints_even_where_python_cannot_raise(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mcp_gateway.cli.audit as audit_cli

    read_sink = audit_cli._read_sink

    def read_sink_pressing_ctrl_c(config: Path | None) -> object:
        _ctrl_c_where_python_cannot_raise()  # while the store opens (its imports run then)
        return read_sink(config)

    monkeypatch.setattr(audit_cli, "_read_sink", read_sink_pressing_ctrl_c)
    # The timeout bounds the test: a lost Ctrl-C would follow (and print the header) until then.
    code, out, err = _run("audit", "tail", "-c", str(config), "-n", "1", "--follow", "--timeout", "5")
    assert code == 0 and out == "" and err == ""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back


def test_export_csv_neutralizes_formulas_an_agent_planted(config: Path, tmp_path: Path) -> None:
    payloads = ['=HYPERLINK("http://evil.example","x")', "+1+cmd|'/C calc'!A0", "@SUM(A1)", "-1+1"]
    _append(
        config,
        [
            AuditEvent(kind="denied", agent=p, tool=p, decision="deny", detail={"reasons": [p], "client": p})
            for p in payloads
        ],
    )
    target = tmp_path / "audit.csv"
    code, _, err = _run("audit", "export", "-c", str(config), "--format", "csv", "-o", str(target))
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(target.read_text(encoding="utf-8"), newline="")))
    assert rows[0][:4] == ["seq", "time", "kind", "agent"]
    assert len(rows) == 1 + len(EVENTS) + len(payloads)
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    planted = rows[-len(payloads) :]
    assert [row[3] for row in planted] == ["'" + p for p in payloads]


def test_export_ocsf_and_jsonl_write_one_event_per_record_oldest_first(config: Path) -> None:
    code, out, _ = _run("audit", "export", "-c", str(config), "--format", "ocsf", "--decision", "deny")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["class_uid"], e["metadata"]["sequence"]) for e in events] == [(6003, 1), (3002, 4)]
    code, out, _ = _run("audit", "export", "-c", str(config), "--format", "jsonl")
    assert [json.loads(line)["seq"] for line in out.splitlines()] == list(range(1, len(EVENTS) + 1))
    code, _, err = _run("audit", "export", "-c", str(config), "--format", "xml")
    assert code == 2 and "ocsf, jsonl, csv" in err


def test_a_glob_export_reads_past_a_search_window_with_no_match_in_it(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mcp_gateway.audit.search as search

    # A scanning query (a tool glob) looks at a bounded window of seqs per page: make it small, and
    # put a window's worth of records that do not match between the matches.
    monkeypatch.setattr(search, "MAX_SCAN", 4)
    filler = [AuditEvent(kind="intent", call_id=f"f{i}", agent="x", tool="github.search") for i in range(9)]
    _append(
        config, [*filler, AuditEvent(kind="intent", call_id="late", agent="ops-bot", tool="ops.rerun_job")]
    )
    code, out, _ = _run("audit", "export", "-c", str(config), "--format", "jsonl", "--tool", "ops.*")
    assert code == 0
    assert [json.loads(line)["call_id"] for line in out.splitlines()] == ["", "c3", "late"]
