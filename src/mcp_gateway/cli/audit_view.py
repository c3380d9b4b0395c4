"""How ``mcp-gateway audit tail/query/export`` read and show records: filters, table, follow.

Filters go to the store's ``search`` (``audit/search.py``): ``--tool`` is a glob there, and every
filter has an index. Values an agent chose (tool names, reasons) can hold terminal control
characters; the table shows them escaped (``\\x1b``), so a record cannot rewrite the analyst's screen.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import typer

from mcp_gateway.audit.export import record_to_dict
from mcp_gateway.audit.search import MAX_LIMIT, AuditSearch
from mcp_gateway.cli.common import fail, iso, parse_since
from mcp_gateway.cli.ctrl_c import StopOnCtrlC
from mcp_gateway.errors import GatewayError
from mcp_gateway.types import AuditRecord

DECISIONS = ("allow", "deny", "pending")
"""Every ``decision`` a record can carry (besides none)."""
HEADER = (
    "SEQ",
    "TIME",
    "KIND",
    "AGENT",
    "TOOL",
    "DECISION",
    "STATUS",
    "CLIENT",
    "TOKEN",
    "APPROVER",
    "REASON",
)
_REASON_MAX = 160


@dataclass(frozen=True, slots=True)
class Filters:
    """The filters shared by ``tail``, ``query`` and ``export`` (validated by ``filters``)."""

    agent: str | None = None
    tool: str | None = None
    decision: str | None = None
    status: str | None = None
    kind: str | None = None
    since: float | None = None
    until: float | None = None

    def search(self, **more: Any) -> AuditSearch:
        return AuditSearch(
            agent=self.agent,
            tool=self.tool,
            decision=self.decision,
            status=self.status,
            kind=self.kind,
            since=self.since,
            until=self.until,
            **more,
        )


def filters(
    *,
    agent: str | None,
    tool: str | None,
    decision: str | None,
    status: str | None,
    kind: str | None,
    since: str | None,
    until: str | None,
) -> Filters:
    """Checked filters: an unknown decision exits 2 naming the allowed ones; a time that cannot be read
    exits 1 saying why (as ``--since`` always has)."""
    if decision is not None and decision not in DECISIONS:
        raise fail(f"--decision `{decision}` is not a decision: use one of {', '.join(DECISIONS)}", code=2)
    now = time.time()
    try:
        since_ts = parse_since(since, now) if since else None
        until_ts = parse_since(until, now, option="--until") if until else None
    except GatewayError as exc:
        raise fail(str(exc)) from None
    if since_ts is not None and until_ts is not None and since_ts > until_ts:
        raise fail("--since is later than --until")
    return Filters(agent, tool, decision, status, kind, since_ts, until_ts)


def _shown(value: Any) -> str:
    """``value`` on one line with control characters escaped; ``-`` when empty."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if not text:
        return "-"
    out = []
    for char in text:
        code = ord(char)
        out.append(char if code >= 32 and code != 127 and not 0x80 <= code < 0xA0 else f"\\x{code:02x}")
    return "".join(out)


def reason(record: AuditRecord) -> str:
    """What the record says about why: its reasons, reason, error or note."""
    detail = record.detail
    reasons = detail.get("reasons")
    if isinstance(reasons, list):
        text = "; ".join(str(r) for r in reasons)
    elif isinstance(reasons, dict):  # auth_failure_summary: reason → count
        text = ", ".join(f"{k} ({v})" for k, v in reasons.items())
    else:
        text = str(detail.get("reason") or detail.get("error") or detail.get("note") or "")
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 1] + "…"


def row(record: AuditRecord) -> tuple[str, ...]:
    """The table cells of ``record`` (``HEADER`` order)."""
    detail = record.detail
    token = detail.get("token_id") or detail.get("admin_token_id") or ""
    return tuple(
        _shown(cell)
        for cell in (
            str(record.seq),
            iso(record.ts),
            record.kind,
            record.agent,
            record.tool,
            record.decision,
            record.status,
            detail.get("client", ""),
            token,
            detail.get("approver", ""),
            reason(record),
        )
    )


class Table:
    """Prints rows under ``HEADER``, columns as wide as the first rows need (later rows may overflow)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.widths: list[int] | None = None

    def print(self, records: list[AuditRecord]) -> None:
        if self.as_json:
            for rec in records:
                typer.echo(json.dumps(record_to_dict(rec), sort_keys=True))
            return
        rows = [row(rec) for rec in records]
        if self.widths is None:
            self.widths = [max(len(cells[i]) for cells in [HEADER, *rows]) for i in range(len(HEADER) - 1)]
            self._line(HEADER)
        for cells in rows:
            self._line(cells)

    def _line(self, cells: tuple[str, ...]) -> None:
        assert self.widths is not None  # noqa: S101 - set before the first line
        padded = [cell.ljust(width) for cell, width in zip(cells, self.widths, strict=False)]
        typer.echo("  ".join([*padded, cells[-1]]).rstrip())


def newest(sink: Any, found: Filters, count: int) -> list[AuditRecord]:
    """The newest ``count`` matching records, oldest first."""
    out: list[AuditRecord] = []
    before = None
    while len(out) < count:
        page = sink.search(found.search(limit=min(MAX_LIMIT, count - len(out)), before_seq=before))
        out.extend(page.records)
        before = page.next_before
        if before is None:
            break
    return out[::-1]


def forward(sink: Any, found: Filters, after: int = 0) -> Iterator[AuditRecord]:
    """Every matching record after seq ``after``, oldest first, a page at a time."""
    while True:
        page = sink.search(found.search(limit=MAX_LIMIT, after_seq=after, order="oldest"))
        yield from page.records
        if page.next_after is None:
            return
        # A short page is the end, unless a scanning query (free text, a tool glob) stopped at its
        # window: then older-to-newer matches may follow past ``searched_to``.
        if len(page.records) < MAX_LIMIT and page.searched_to is None:
            return
        after = max(page.next_after, page.searched_to or 0)


def follow(
    sink: Any,
    found: Filters,
    after: int,
    emit: Callable[[list[AuditRecord]], None],
    *,
    interval: float,
    timeout: float | None,
    max_records: int | None,
    wait: Callable[[float], bool] | None = None,
) -> int:
    """Print records as they are written, until ``timeout`` seconds, ``max_records`` printed, or
    ``wait`` (the pause between looks) says to stop (``StopOnCtrlC.wait``: Ctrl-C was pressed);
    returns how many were printed."""
    wait = wait or StopOnCtrlC(enabled=False).wait
    deadline = time.monotonic() + timeout if timeout is not None else None
    printed = 0
    while max_records is None or printed < max_records:
        batch = list(forward(sink, replace(found), after))
        if max_records is not None:
            batch = batch[: max_records - printed]
        if batch:
            emit(batch)
            printed += len(batch)
            after = batch[-1].seq
        if deadline is not None and time.monotonic() >= deadline:
            break
        if max_records is not None and printed >= max_records:
            break
        if wait(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))):
            break
    return printed


def matches(record: AuditRecord, found: Filters) -> bool:
    """Whether ``record`` passes ``found`` (for the ``--arg-hmac`` query, which the store answers
    without the other filters)."""
    from fnmatch import fnmatchcase

    return (
        (found.agent is None or record.agent == found.agent)
        and (found.tool is None or fnmatchcase(record.tool, found.tool))
        and (found.decision is None or record.decision == found.decision)
        and (found.status is None or record.status == found.status)
        and (found.kind is None or record.kind == found.kind)
        and (found.since is None or record.ts >= found.since)
        and (found.until is None or record.ts < found.until)
    )
