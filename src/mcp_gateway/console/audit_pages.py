"""The audit pages: search with filters and keyset paging, a live stream (SSE), one record's page.

The search is ``AuditSearch`` (``audit/search.py``) run by the store's ``search``; the live stream
polls the store for records past the last one sent (``Last-Event-ID`` on a reconnect) and ends
after ``STREAM_SECONDS`` so no stream outlives a session (the browser's ``EventSource`` reconnects).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from mcp_gateway.audit.health import RecordCoverage, last_verify_run, record_coverage
from mcp_gateway.audit.search import AuditPage, AuditSearch
from mcp_gateway.console.chain import public_keys
from mcp_gateway.console.sessions import Session
from mcp_gateway.console.web import Console, when
from mcp_gateway.errors import GatewayError
from mcp_gateway.types import AuditRecord, AuditSink

STREAM_SECONDS = 25.0
POLL_SECONDS = 0.5
PAGE_SIZE = 50
EXPORT_LIMIT = 10_000
"""The most records one export (``export.py``) holds: the newest that match."""
FILTERS = ("agent", "tool", "decision", "status", "since", "until", "text")


class BadFilter(ValueError):
    """A filter value the search cannot use (shown on the page)."""


def _time(name: str, text: str) -> float:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadFilter(f"`{name}` must be a date and time like 2026-01-31T13:45 (UTC)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def parse_search(params: Mapping[str, str]) -> AuditSearch:
    """An ``AuditSearch`` from the page's query string. Raises ``BadFilter``."""
    values = {name: (params.get(name) or "").strip() or None for name in FILTERS}
    before = params.get("before") or None
    if before is not None and not before.isdigit():
        raise BadFilter("`before` must be a record number")
    return AuditSearch(
        agent=values["agent"],
        tool=values["tool"],
        decision=values["decision"],
        status=values["status"],
        since=_time("since", values["since"]) if values["since"] else None,
        until=_time("until", values["until"]) if values["until"] else None,
        text=values["text"],
        before_seq=int(before) if before else None,
        limit=PAGE_SIZE,
    )


def _matches(record: AuditRecord, q: AuditSearch) -> bool:
    if any(
        want is not None and have != want
        for want, have in (
            (q.agent, record.agent),
            (q.decision, record.decision),
            (q.status, record.status),
            (q.kind, record.kind),
            (q.call_id, record.call_id),
        )
    ):
        return False
    if q.tool is not None and not fnmatch.fnmatchcase(record.tool, q.tool):
        return False
    if (q.since is not None and record.ts < q.since) or (q.until is not None and record.ts >= q.until):
        return False
    if q.text is not None and q.text.casefold() not in json.dumps(dict(record.detail)).casefold():
        return False
    return (q.before_seq is None or record.seq < q.before_seq) and (
        q.after_seq is None or record.seq > q.after_seq
    )


def search(sink: AuditSink, query: AuditSearch) -> AuditPage:
    """Run ``query`` on the store (its ``search``; a store without one is scanned). Blocks."""
    run = getattr(sink, "search", None)
    if run is not None:
        page: AuditPage = run(query)
        return page
    found = [r for r in reversed(sink.records()) if _matches(r, query)]
    shown = found[: query.limit]
    return AuditPage(shown, shown[-1].seq if len(found) > query.limit else None)


def row(record: AuditRecord) -> dict[str, Any]:
    """A record as the list and the live stream show it (plain values; escaped where shown)."""
    reasons = record.detail.get("reasons") or record.detail.get("reason") or ""
    if isinstance(reasons, list):
        reasons = "; ".join(str(r) for r in reasons)
    return {
        "seq": record.seq,
        "ts": when(record.ts),
        "kind": record.kind,
        "agent": record.agent,
        "tool": record.tool,
        "decision": record.decision,
        "status": record.status,
        "reason": str(reasons)[:300],
        "client": str(record.detail.get("client", "")),
        "token_id": str(record.detail.get("token_id", "")),
    }


def shown_args(args: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each argument with whether it is sensitive (stored as its HMAC) and what to show for it."""
    shown = []
    for name, value in args.items():
        sensitive = isinstance(value, Mapping) and set(value) == {"hmac"}
        mac = value.get("hmac") if isinstance(value, Mapping) else None
        shown.append({"name": name, "sensitive": sensitive, "hmac": mac, "value": value})
    return shown


def audit_routes(console: Console) -> list[Route]:
    ctx = console.ctx

    async def audit_page(request: Request, session: Session) -> Response:
        params = dict(request.query_params)
        error = ""
        try:
            query = parse_search(params)
            page = await anyio.to_thread.run_sync(search, ctx.sink, query)
        except (BadFilter, GatewayError) as exc:  # GatewayError: the store's AuditSearchError
            error, page = str(exc), AuditPage([], None)
        filters = {name: params.get(name, "") for name in FILTERS}
        live = not any(filters.values()) and "before" not in params
        newest = page.records[0].seq if page.records else 0
        return console.render(
            request,
            "audit.html",
            session,
            rows=[row(r) for r in page.records],
            filters=filters,
            next_before=page.next_before,
            error=error,
            live=live,
            newest=newest,
            export_limit=f"{EXPORT_LIMIT:,}",
            status=400 if error else 200,
        )

    async def record_page(request: Request, session: Session) -> Response:
        seq = int(request.path_params["seq"])

        def load() -> tuple[AuditRecord | None, list[AuditRecord], RecordCoverage | None]:
            found = ctx.sink.records(after_seq=seq - 1, limit=1)
            record = found[0] if found and found[0].seq == seq else None
            if record is None:
                return None, [], None
            related = search(ctx.sink, AuditSearch(call_id=record.call_id, limit=100)).records
            related = sorted(related, key=lambda r: r.seq) if record.call_id else [record]
            keys = public_keys(ctx.public_key_path)
            coverage = record_coverage(seq, ctx.sink.checkpoints(), last_verify_run(ctx.sink), keys)
            return record, related, coverage

        record, related, coverage = await anyio.to_thread.run_sync(load)
        if record is None:
            return console.refuse(request, session, 404, f"no audit record {seq}")
        outcome = next((r for r in reversed(related) if r.kind in ("outcome", "denied")), None)
        return console.render(
            request,
            "record.html",
            session,
            record=record,
            # An outcome record holds no arguments: show the call's (its intent's or denial's).
            args=shown_args(record.args or next((r.args for r in related if r.args), {})),
            related=related,
            outcome=outcome,
            coverage=coverage,
        )

    async def stream(request: Request, session: Session) -> Response:
        start = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
        after = int(start) if start.isdigit() else 0

        def newer(seq: int) -> list[AuditRecord]:
            return ctx.sink.records(after_seq=seq, limit=100)

        async def events() -> AsyncIterator[str]:
            nonlocal after
            yield "retry: 2000\n\n"
            # A store that fails ends the stream; the browser reconnects after the retry delay.
            with anyio.move_on_after(STREAM_SECONDS), contextlib.suppress(GatewayError):
                while await console.session_of(request) is not None:
                    batch = await anyio.to_thread.run_sync(newer, after)
                    for record in batch:
                        after = record.seq
                        yield f"id: {record.seq}\ndata: {json.dumps(row(record))}\n\n"
                    if not batch:
                        await anyio.sleep(POLL_SECONDS)

        return StreamingResponse(events(), media_type="text/event-stream")

    return [
        Route(console.url("/audit"), console.guard("viewer", audit_page), methods=["GET"]),
        Route(console.url("/audit/stream"), console.guard("viewer", stream), methods=["GET"]),
        Route(console.url("/audit/{seq:int}"), console.guard("viewer", record_page), methods=["GET"]),
    ]
