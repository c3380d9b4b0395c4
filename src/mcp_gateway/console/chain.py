"""Chain health for the console: the trusted keys, and "verify now" (one run at a time) whose progress
a page polls. What is checked and recorded is ``audit/health.py``'s: the run ends in an ``audit_verify``
record written through the audit log (chained, sealed, seen by alerts and every replica).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mcp_gateway.audit.checkpoint import parse_public_keys
from mcp_gateway.audit.health import VERIFY_KIND, VerifyProgress, verify_event, verify_with_progress
from mcp_gateway.errors import GatewayError
from mcp_gateway.types import AuditEvent, AuditRecord, AuditSink, Clock, system_clock

logger = logging.getLogger(__name__)
SHOWN_PROBLEMS = 20

Append = Callable[[AuditEvent], Awaitable[AuditRecord]]


def public_keys(path: Path | None) -> dict[str, Ed25519PublicKey]:
    """The trusted audit-signing keys from the exported file (empty when it is missing or unreadable)."""
    if path is None or not path.is_file():
        return {}
    try:
        return parse_public_keys(path.read_bytes())
    except (GatewayError, OSError) as exc:
        logger.warning("audit public keys unreadable: %s", exc)
        return {}


@dataclass
class LiveRun:
    """A verify run started from the console, as its progress stands."""

    by: str
    started_at: float
    progress: VerifyProgress | None = None
    error: str | None = None
    finished: bool = False

    def view(self) -> dict[str, object]:
        """JSON for the page's progress poll."""
        step = self.progress
        outcome = step.outcome if step is not None else None
        problems = (
            [f"seq {p.seq}: {p.kind}: {p.message}" for p in outcome.assessment.problems] if outcome else []
        )
        if self.error is not None:
            problems = [f"verify could not run: {self.error}"]
        return {
            "phase": "done" if self.finished else (step.phase if step is not None else "reading"),
            "done": step.done if step is not None else 0,
            "total": step.total if step is not None else 0,
            "ok": (outcome.ok if outcome is not None else False if self.error else None),
            "problems": problems[:SHOWN_PROBLEMS],
            "by": self.by,
            "started_at": self.started_at,
        }


class Verifier:
    """Runs ``verify_with_progress`` over the whole store, one run at a time, and records its outcome.

    Args:
        sink: the audit store.
        keys: the exported audit-signing public keys.
        mirror: the checkpoint mirror file, or None.
        append: makes the run's ``audit_verify`` record durable (``AuditLog.append``).
        clock: the time source.
    """

    def __init__(
        self,
        sink: AuditSink,
        keys: Path | None,
        mirror: Path | None,
        append: Append,
        clock: Clock = system_clock,
    ) -> None:
        self.sink = sink
        self.keys = keys
        self.mirror = mirror
        self.append = append
        self.clock = clock
        self.last: LiveRun | None = None
        self._lock = threading.Lock()

    def begin(self, by: str) -> tuple[LiveRun, bool]:
        """The run to report: a new one (True: the caller must ``run`` it), or the one going (False)."""
        with self._lock:
            if self.last is not None and not self.last.finished:
                return self.last, False
            self.last = LiveRun(by, self.clock())
            return self.last, True

    async def run(self, live: LiveRun) -> None:
        """Verify, updating ``live``; the outcome is audited (who ran it, how far, the first problems)."""
        sealer = getattr(self.sink, "sealer", None)
        try:
            async for step in verify_with_progress(
                self.sink, public_keys(self.keys), mirror=self.mirror, sealer=sealer
            ):
                live.progress = step
                if step.outcome is not None:
                    await self.append(verify_event(step.outcome, by=live.by))
        except GatewayError as exc:
            live.error = str(exc)
            # A run that could not read the log failed too: the ``verify_failed`` rule sees it.
            failed = AuditEvent(
                kind=VERIFY_KIND,
                decision="deny",
                status="error",
                detail={
                    "by": live.by,
                    "checked": 0,
                    "through_seq": 0,
                    "through_hash": "",
                    "problems": 1,
                    "first_problem_seq": None,
                    "shown": [{"seq": 0, "kind": "unreadable", "message": str(exc)[:500]}],
                    "unauthenticated_after": None,
                    "seconds": round(self.clock() - live.started_at, 3),
                },
            )
            try:
                await self.append(failed)
            except GatewayError:
                logger.error("the failed verify run could not be audited")
        finally:
            live.finished = True
