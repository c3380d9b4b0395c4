"""The SQL that both approval stores share: the table, the statements (one text per statement for both
dialects), the row mapping, and ``SQLApprovalStore``, the ``ApprovalStore`` logic each backend in
``sql.py`` completes with its own transaction.

Deciding and using are each one conditional ``UPDATE`` inside one transaction: the row changes only
if it is still in the state the operation needs (``pending`` and unexpired to decide; ``approved``,
unexpired and bound to this agent, tool and argument hash to use). Two calls racing to use the same
approval therefore cannot both succeed, on one process or on several replicas. When the update
matches nothing, the row is read in the same transaction to say exactly why.

An approval under the two-person rule collects votes in its ``approvers`` column (JSON). A vote is a
compare-and-set on that column's text as read in the same transaction: two approvers voting at once
on two replicas cannot both add to the same old list, so neither vote is lost and neither counts
twice; the loser re-reads and votes again (or is refused, if it has become the same approver twice
or the request is no longer pending).
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from mcp_gateway.approvals.model import (
    STATUSES,
    Approval,
    ApprovalError,
    ApprovalStatus,
    consume_refusal,
    decide_refusal,
    new_approval_id,
)
from mcp_gateway.errors import GatewayError
from mcp_gateway.types import Clock

__all__ = ["ADDED_COLUMNS", "FIELDS", "QUERIES", "Cursor", "SQLApprovalStore"]


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...

    def fetchall(self) -> builtins.list[Any]: ...


FIELDS = (
    "id, agent, tool, args_hash, args, reason, detail, created_at, expires_at, ttl_seconds, status,"
    " decided_by, decided_at, note, used_at, used_call_id, min_approvers, approvers"
)
# One text per statement for both dialects: {t} is the table, %s the parameters.
QUERIES = {
    "create_table": "CREATE TABLE IF NOT EXISTS {t} (id TEXT PRIMARY KEY, agent TEXT NOT NULL,"
    " tool TEXT NOT NULL, args_hash TEXT NOT NULL, args TEXT NOT NULL, reason TEXT NOT NULL,"
    " detail TEXT NOT NULL, created_at {real} NOT NULL, expires_at {real} NOT NULL,"
    " ttl_seconds {real} NOT NULL, status TEXT NOT NULL, decided_by TEXT, decided_at {real}, note TEXT,"
    " used_at {real}, used_call_id TEXT, min_approvers INTEGER NOT NULL DEFAULT 1,"
    " approvers TEXT NOT NULL DEFAULT '[]')",
    "create_index": "CREATE INDEX IF NOT EXISTS {i} ON {t} (status, created_at)",
    # Constant text only: the table is a quoted identifier, values are always parameters.
    "insert": f"INSERT INTO {{t}} ({FIELDS}) VALUES ({', '.join(['%s'] * 18)})",  # noqa: S608 - constants
    "get": f"SELECT {FIELDS} FROM {{t}} WHERE id = %s",  # noqa: S608 - constants only
    # Votes compare-and-set the approvers text read in the same transaction (see the module doc).
    "vote": "UPDATE {t} SET approvers = %s WHERE id = %s AND status = 'pending' AND expires_at > %s"
    " AND approvers = %s",
    "approve": "UPDATE {t} SET status = 'approved', approvers = %s, decided_by = %s, decided_at = %s,"
    " note = %s, expires_at = %s + ttl_seconds WHERE id = %s AND status = 'pending' AND expires_at > %s"
    " AND approvers = %s",
    "deny": "UPDATE {t} SET status = 'denied', decided_by = %s, decided_at = %s, note = %s"
    " WHERE id = %s AND status = 'pending' AND expires_at > %s",
    "consume": "UPDATE {t} SET status = 'used', used_at = %s, used_call_id = %s WHERE id = %s"
    " AND agent = %s AND tool = %s AND args_hash = %s AND status = 'approved' AND expires_at > %s",
}
# Columns added after the first release, with their definitions (constants, never input).
ADDED_COLUMNS = {"min_approvers": "INTEGER NOT NULL DEFAULT 1", "approvers": "TEXT NOT NULL DEFAULT '[]'"}
# ``list`` filters: the effective status, with expiry applied at read time.
_LIST_WHERE = {
    None: ("TRUE", 0),
    "pending": ("status = 'pending' AND expires_at > %s", 1),
    "approved": ("status = 'approved' AND expires_at > %s", 1),
    "denied": ("status = 'denied'", 0),
    "used": ("status = 'used'", 0),
    "expired": ("(status = 'expired' OR (status IN ('pending', 'approved') AND expires_at <= %s))", 1),
}


def _json(value: Mapping[str, Any]) -> str:
    # ASCII-escaped JSON stores anything (lone surrogates, NUL) in TEXT on both databases and reads
    # back equal; values JSON cannot hold (a datetime in a before-image) are kept as their text.
    return json.dumps(dict(value), ensure_ascii=True, sort_keys=True, default=str)


def _from_row(row: Any) -> Approval:
    values = list(row)
    values[4], values[6] = json.loads(values[4]), json.loads(values[6])
    values[16], values[17] = int(values[16]), tuple(json.loads(values[17]))
    return Approval(*values)


def _to_row(approval: Approval) -> list[Any]:
    row = list(approval.to_dict().values())
    row[4], row[6] = _json(approval.args), _json(approval.detail)
    row[17] = _votes(approval.approvers)
    return row


def _votes(votes: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps([dict(v) for v in votes], ensure_ascii=True, sort_keys=True)


# A vote that loses a compare-and-set re-reads and tries again; more losses than this in a row
# means something keeps rewriting the row, and the approver is told to try again.
_VOTE_ATTEMPTS = 5


class SQLApprovalStore:
    """The ``ApprovalStore`` logic shared by the SQL backends; each supplies ``_tx`` and ``_q``."""

    _q: dict[str, Any]
    _clock: Clock
    _min_approvers: int = 1

    def _tx(self) -> AbstractContextManager[Cursor]:
        """A write transaction (committed on success, rolled back on error)."""
        raise NotImplementedError

    def _list_query(self, where: str) -> Any:
        raise NotImplementedError

    def create(
        self,
        *,
        agent: str,
        tool: str,
        args_hash: str,
        args: Mapping[str, Any],
        reason: str,
        detail: Mapping[str, Any],
        ttl_seconds: float,
        min_approvers: int | None = None,
    ) -> Approval:
        """Record a pending request for a human decision on this exact call.

        Args:
            min_approvers: distinct approvers the call needs (a grant's ``approval.min_approvers``);
                the store's own minimum (``approvals.min_approvers``) applies when it is larger.

        Raises:
            GatewayError: empty agent or tool, a ttl that is not positive, or ``min_approvers`` < 1.
            ApprovalStoreUnavailable: the store cannot be written.
        """
        if not agent or not tool:
            raise GatewayError("an approval needs an agent and a tool")
        if not ttl_seconds > 0:
            raise GatewayError("approval ttl_seconds must be positive")
        if min_approvers is not None and min_approvers < 1:
            raise GatewayError("approval min_approvers must be at least 1")
        now = self._clock()
        approval = Approval(
            id=new_approval_id(),
            agent=agent,
            tool=tool,
            args_hash=args_hash,
            args=dict(args),
            reason=reason,
            detail=dict(detail),
            created_at=now,
            expires_at=now + ttl_seconds,
            ttl_seconds=float(ttl_seconds),
            min_approvers=max(self._min_approvers, min_approvers or 1),
        )
        with self._tx() as cur:
            cur.execute(self._q["insert"], _to_row(approval))
        return approval

    def get(self, approval_id: str) -> Approval | None:
        """The approval with its effective status now, or None."""
        with self._tx() as cur:
            rows = cur.execute(self._q["get"], (approval_id,)).fetchall()
        return _from_row(rows[0]).as_of(self._clock()) if rows else None

    def list(self, status: ApprovalStatus | None = None, *, limit: int = 100) -> builtins.list[Approval]:
        """The newest ``limit`` approvals whose effective status is ``status`` (any when None).

        Raises:
            GatewayError: an unknown status.
        """
        if status is not None and status not in STATUSES:
            raise GatewayError(f"unknown approval status `{status}` (one of {', '.join(STATUSES)})")
        where, uses_now = _LIST_WHERE[status]
        now = self._clock()
        with self._tx() as cur:
            rows = cur.execute(self._list_query(where), (*([now] * uses_now), limit)).fetchall()
        return [_from_row(row).as_of(now) for row in rows]

    def decide(self, approval_id: str, *, approve: bool, approver: str, note: str | None = None) -> Approval:
        """Approve or deny a pending, unexpired request as ``approver``; returns it as it now stands.

        A deny is final. An approval is a vote: the request becomes ``approved`` (usable for its
        ``ttl_seconds`` from now) when ``min_approvers`` distinct approvers have voted, and stays
        ``pending`` with the vote recorded until then. The checks of ``decide_refusal`` (the
        requester never approves its own call; an approver counts once) are made here, in the
        deciding transaction, whatever the caller checked before.

        Raises:
            ApprovalNotFound, ApprovalExpired, ApprovalNotPending, ApprovalSelfApproval,
            ApprovalSameApprover: it cannot be decided by this approver (nothing changed).
            ApprovalError: other approvers kept changing it; try again (nothing changed).
            GatewayError: no approver name.
        """
        if not approver:
            raise GatewayError("a decision needs the approver's name")
        now = self._clock()
        for _ in range(_VOTE_ATTEMPTS):
            with self._tx() as cur:
                rows = cur.execute(self._q["get"], (approval_id,)).fetchall()
                current = _from_row(rows[0]) if rows else None
                refusal = decide_refusal(current, approval_id, now=now, approver=approver, approve=approve)
                if refusal is not None:
                    raise refusal
                assert current is not None  # noqa: S101 - decide_refusal refuses a missing one
                if not approve:
                    cur.execute(self._q["deny"], (approver, now, note, approval_id, now))
                else:
                    read = rows[0][17]
                    votes = [*current.approvers, {"name": approver, "at": now, "note": note}]
                    if len(votes) >= current.min_approvers:
                        decided_by = ", ".join(str(v["name"]) for v in votes)
                        params = (_votes(votes), decided_by, now, note, now, approval_id, now, read)
                        cur.execute(self._q["approve"], params)
                    else:
                        cur.execute(self._q["vote"], (_votes(votes), approval_id, now, read))
                if cur.rowcount == 1:
                    rows = cur.execute(self._q["get"], (approval_id,)).fetchall()
                    return _from_row(rows[0])
        raise ApprovalError(
            f"approval `{approval_id}` changed while it was being decided; try again", approval_id
        )

    def consume(
        self,
        approval_id: str,
        *,
        agent: str,
        tool: str,
        args_hash: str,
        call_id: str,
        now: float | None = None,
    ) -> Approval:
        """Use an approval for this call, at most once, atomically; returns it marked ``used``.

        Raises:
            ApprovalNotFound, ApprovalOtherAgent, ApprovalOtherTool, ApprovalArgsChanged,
            ApprovalPending, ApprovalDenied, ApprovalExpired, ApprovalUsed: it may not be used (nothing
            changed).
        """
        now = self._clock() if now is None else now
        with self._tx() as cur:
            cur.execute(self._q["consume"], (now, call_id, approval_id, agent, tool, args_hash, now))
            used = cur.rowcount == 1
            rows = cur.execute(self._q["get"], (approval_id,)).fetchall()
        current = _from_row(rows[0]) if rows else None
        if used and current is not None:
            return current
        refusal = consume_refusal(current, approval_id, agent=agent, tool=tool, args_hash=args_hash, now=now)
        raise refusal or ApprovalError(f"approval `{approval_id}` could not be used", approval_id)
