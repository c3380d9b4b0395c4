"""What the governed skeleton (``governed.py``) works on: the exchange, the grant its act gets, the
rule its answer must meet, and the facts every step shares."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from mcp_gateway.core.governance import PendingApproval
from mcp_gateway.errors import ToolNotGranted
from mcp_gateway.policy.model import GrantGovernance
from mcp_gateway.redact import Redactor
from mcp_gateway.types import AuditEvent, Decision, Principal

M = TypeVar("M", bound=BaseModel)
"""The type of an answer (a ``CallToolResult``, a ``ReadResourceResult``, ...)."""
MAX_SHOWN = 300  # what we record of an untrusted name or URI
_UNDECIDED = Decision("deny", (), ())


@dataclass(frozen=True, slots=True)
class Exchange:
    """One exchange to govern.

    Attributes:
        principal: the agent.
        method: the MCP method (``tools/call``, ``resources/read``, ``sampling/createMessage``, ...).
        target: what policy grants: ``up.tool``, ``resource:up:URI``, ``prompt:up.name``, ...
        arguments: what policy constrains and the audit records (scrubbed; sensitive ones as HMACs).
        noun: how a refusal names the target (``tool``, ``resource``, ``prompt``).
        approval_id: the approval this exchange carries, if any.
        builtin: the act is a built-in tool, which evaluates its grant's tool conditions itself
            (for any other act such a condition always asks a human: it cannot be checked).
        where: who answers, as messages name it (``upstream `x```, ``tool `x```).
        label: what a refusal names (a URI, a prompt name); default the target.
        grant: the policy key that grants it, when not the target (a completion is granted by its
            prompt's or template's grant, and recorded as ``completion:...``).
    """

    principal: Principal
    method: str
    target: str
    arguments: Mapping[str, Any]
    noun: str = "tool"
    approval_id: str | None = None
    builtin: bool = False
    where: str = "the upstream"
    label: str | None = None
    grant: str | None = None

    @property
    def policy_key(self) -> str:
        """What policy decides, quotas count and approvals bind."""
        return self.target if self.grant is None else self.grant


@dataclass(slots=True)
class Granted:
    """What ``act`` is given: the call's id, the grant that allowed it, and a place for audit facts."""

    call_id: str
    governance: GrantGovernance
    approved: bool
    facts: dict[str, Any] = field(default_factory=dict)


Act = Callable[[Granted], Awaitable[tuple[dict[str, Any], str]]]
"""The exchange's one step: its answer as JSON-ready data and a status (``ok``, ``error``, ...).
May raise ``UpstreamError`` (recorded ``upstream_error``) or ``NeedsApproval`` (parked)."""


@dataclass(frozen=True, slots=True)
class ResultRule(Generic[M]):
    """What an answer must be, and what becomes of one that is not.

    Attributes:
        model: the answer's type; an answer it does not validate is the upstream's error.
        oversize: ``truncate`` (a tool result: cut, with a marker) or ``refuse`` (one document).
        failure: ``result``: a failure is answered as an error result of ``model`` (a tool's
            ``isError``); ``raise``: as ``UpstreamError`` (a JSON-RPC error).
        pending: the answer to an exchange parked for a human (given the target as shown, the
            approval and the reasons); None: approvals cannot carry this
            method, so one that needs a human is refused.
    """

    model: type[M]
    oversize: Literal["truncate", "refuse"] = "refuse"
    failure: Literal["result", "raise"] = "raise"
    pending: Callable[[str, PendingApproval, list[str]], dict[str, Any]] | None = None


Authorize = Callable[[Exchange], Decision]
Prepare = Callable[[Exchange], Awaitable[None] | None]
"""The caller's admission check: plain, or a coroutine when it must wait (a shared store)."""


def failed(message: str) -> dict[str, Any]:
    """A tool-error payload with one text block."""
    return {"content": [{"type": "text", "text": message}], "isError": True}


@dataclass(slots=True)
class Call:
    """One exchange's facts that every step needs."""

    exchange: Exchange
    call_id: str
    shown: str
    redactor: Redactor
    safe_args: Mapping[str, Any] = field(default_factory=dict)
    decision: Decision = field(default=_UNDECIDED)  # frozen: one shared default
    encoded_args: str | None = None
    """The arguments' JSON text once the limits passed them (``check_arguments``)."""
    policy_version: str = ""
    """The version of the policy that decided it ("" before the policy did, or when it did not)."""

    def record(self, safe_args: Mapping[str, Any], decision: Decision) -> None:
        self.safe_args = safe_args
        self.decision = decision

    def event(self, kind: str, **fields: Any) -> AuditEvent:
        return AuditEvent(
            kind=kind, call_id=self.call_id, agent=self.exchange.principal.agent, tool=self.shown, **fields
        )

    def unavailable(self) -> ToolNotGranted:
        """Unknown and ungranted alike, naming only what was asked for."""
        exchange = self.exchange
        label = self.shown if exchange.label is None else self.redactor.scrub_text(exchange.label[:MAX_SHOWN])
        return ToolNotGranted(f"{exchange.noun} `{label}` is not available")


class UnknownTarget(ToolNotGranted):
    """Raised by a ``prepare`` step when nothing answers to the exchange's target; the skeleton refuses
    it as it refuses an ungranted one (``Call.unavailable``), naming only what was asked for."""

    def __init__(self) -> None:
        super().__init__("unknown target")
