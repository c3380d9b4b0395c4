"""The audit search's export: the current filter's records as CSV or JSON lines, streamed.

The encodings are the SIEM export's (``connectors/siem/formats.py``): every record passes the
redactor again, CSV cells a spreadsheet would read as a formula get a leading ``'`` and every cell is
quoted. At most ``EXPORT_LIMIT`` records leave per export, newest first, read ``EXPORT_PAGE`` at a
time from the store (keyset paging, like the page). An export that stops at that limit while older
records may still match says so in its last line, which is not a record: in JSON lines an object
with the one key ``export_truncated``, in CSV a row whose ``kind`` is ``export_truncated``; both give
the record number to continue before (``before=N``, which the export takes as the page does), so a
file never looks complete when it is not. The file is an attachment of a non-HTML type
(with ``nosniff`` and the console's CSP), so HTML in a record is never rendered by the browser.
Each export is audited (who, which filter, which format) before a record leaves.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
from collections.abc import AsyncIterator
from typing import Literal

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from mcp_gateway.audit.search import AuditPage, AuditSearch
from mcp_gateway.connectors.siem.formats import CSV_COLUMNS, export_lines
from mcp_gateway.console.audit_pages import EXPORT_LIMIT, FILTERS, BadFilter, parse_search, search
from mcp_gateway.console.sessions import Session
from mcp_gateway.console.web import Console
from mcp_gateway.errors import GatewayError
from mcp_gateway.redact import EMPTY, Redactor
from mcp_gateway.types import AuditEvent, AuditSink

EXPORT_PAGE = 500
ExportKind = Literal["csv", "jsonl"]
MEDIA_TYPES: dict[str, str] = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


async def export_body(
    sink: AuditSink,
    query: AuditSearch,
    first: AuditPage,
    fmt: ExportKind,
    redactor: Redactor = EMPTY,
    limit: int = EXPORT_LIMIT,
) -> AsyncIterator[str]:
    """The export's text: ``first`` (the page ``query`` found) and the pages after it, up to ``limit``
    records, newest first (CSV: one header line at the top)."""
    page, sent = first, 0
    while True:
        batch = page.records[: limit - sent]
        lines = export_lines(batch, fmt, redactor)
        if fmt == "csv" and sent:
            next(lines)  # the header, written once at the top
        for line in lines:
            yield line
        sent += len(batch)
        cut = len(batch) < len(page.records)
        if not cut and page.next_before is None:
            return
        if sent >= limit:
            # Older records may match: the last line says so (``truncation_line``), never silence.
            yield truncation_line(fmt, sent, batch[-1].seq if cut else page.next_before)
            return
        page = await anyio.to_thread.run_sync(
            search, sink, dataclasses.replace(query, before_seq=page.next_before)
        )


def truncation_line(fmt: ExportKind, sent: int, before: int | None) -> str:
    """The last line of an export cut at its limit: not a record (see the module doc)."""
    note = {
        "records": sent,
        "continue_before": before,
        "message": f"this export stopped at its limit of {sent:,} records; older records may match:"
        f" export again with before={before}",
    }
    if fmt == "jsonl":
        return json.dumps({"export_truncated": note}, sort_keys=True) + "\n"
    cells = {column: "" for column in CSV_COLUMNS}
    cells.update(kind="export_truncated", detail=json.dumps(note, sort_keys=True))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_ALL).writerow(cells.values())
    return buffer.getvalue()


def export_routes(console: Console) -> list[Route]:
    ctx = console.ctx

    async def export(request: Request, session: Session) -> Response:
        params = {name: request.query_params.get(name, "") for name in (*FILTERS, "before")}
        fmt = request.query_params.get("format", "")
        if fmt not in MEDIA_TYPES:
            return console.refuse(request, session, 400, "export format must be `csv` or `jsonl`")
        kind: ExportKind = "csv" if fmt == "csv" else "jsonl"
        try:
            query = dataclasses.replace(parse_search(params), limit=EXPORT_PAGE)
            first = await anyio.to_thread.run_sync(search, ctx.sink, query)
        except (BadFilter, GatewayError) as exc:  # GatewayError: the store's AuditSearchError
            return console.refuse(request, session, 400, str(exc))
        filters = {name: value for name, value in params.items() if value}
        detail = {
            "by": session.person,
            "via": "console",
            "token_id": session.token_id,
            "format": kind,
            "filters": filters,
            "limit": EXPORT_LIMIT,
        }
        try:
            await ctx.gateway.audit.append(AuditEvent(kind="audit_export", status="ok", detail=detail))
        except GatewayError as exc:
            return console.refuse(request, session, 503, f"the audit log is unavailable: {exc}")
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        headers = {"content-disposition": f'attachment; filename="audit-{stamp}.{kind}"'}
        return StreamingResponse(
            export_body(ctx.sink, query, first, kind, ctx.gateway.secrets.current_redactor()),
            media_type=MEDIA_TYPES[kind],
            headers=headers,
        )

    return [Route(console.url("/audit/export"), console.guard("viewer", export), methods=["GET"])]
