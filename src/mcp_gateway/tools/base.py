"""What a built-in (governed) tool is, and what the call path hands it.

A built-in tool is an input model, honest MCP annotations and an async ``run``. The gateway core
does everything around it exactly as for a federated tool: policy, quotas, approvals, the durable
intent record, redaction of the result, the durable outcome record. ``run`` only does the work.

    ToolFailure      the tool ran and failed in a way the agent should read (becomes ``isError``)
    NeedsApproval    the tool found (after reading state) that this call needs a human's approval

Both are ``GatewayError``s; their messages must not carry secret values (results and messages are
scrubbed anyway, but do not rely on it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from mcp_gateway.errors import GatewayError
from mcp_gateway.types import Principal, SecretValue

ModelT = TypeVar("ModelT", bound=BaseModel)


class ToolFailure(GatewayError):
    """The tool could not do what was asked; the message is shown to the agent as a tool error.

    Args:
        message: lowercase, user input in backticks, no secrets.
        detail: structured facts for the outcome audit record (e.g. ``{"rows_matched": 12}``).
    """

    def __init__(self, message: str, detail: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.detail = dict(detail or {})


class NeedsApproval(GatewayError):
    """This exact call may run only after a human approves it (raised before anything is changed).

    Args:
        reason: why, shown to the agent and the approver (e.g. "Amount changes by 10.0x, over 5x").
        detail: facts the approver needs (e.g. the before-image of the record).
    """

    def __init__(self, reason: str, detail: Mapping[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = dict(detail or {})


class ToolInput(BaseModel):
    """Base of every built-in tool's input model: unknown arguments are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class ToolContext:
    """What the call path gives a built-in tool for one call.

    Attributes:
        principal: the authenticated caller.
        call_id: ties the tool's audit facts to the call's intent and outcome records.
        grant_limits: limits of the grant that allowed the call (``{"max_rows": 100}``); empty if none.
        approval_conditions: tool-evaluated approval conditions of that grant (e.g.
            ``[{"change_factor": {"field": "Amount", "over": 5}}]``); raise ``NeedsApproval`` when one holds.
        approved: True when this call carries a valid, unused approval for exactly these arguments:
            the tool must then not raise ``NeedsApproval`` again.
        resolve_secret: vault lookup by secret name (raises ``VaultSealed``/``SecretNotFound``).
        policy_extra: policy sections a tool reads by name: ``tables`` (table rules), ``metrics``
            (named SQL metrics), ``runbooks`` (job → notes). Plain data, already validated.
        audit_detail: facts the tool adds for the outcome record (before/after images, snapshot ids).
            They are redacted like every result before they are stored.
    """

    principal: Principal
    call_id: str
    grant_limits: Mapping[str, Any] = field(default_factory=dict)
    approval_conditions: tuple[Mapping[str, Any], ...] = ()
    approved: bool = False
    resolve_secret: Callable[[str], SecretValue] | None = None
    policy_extra: Mapping[str, Any] = field(default_factory=dict)
    audit_detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BuiltinTool(Generic[ModelT]):
    """One governed tool the gateway itself implements.

    Attributes:
        name: the public name, ``<toolset>.<tool>`` (e.g. ``data.clone_table``).
        description: what it does, for the agent.
        input_model: validates the arguments (a ``ToolInput`` subclass); its JSON schema is the
            tool's ``inputSchema``.
        run: does the work; returns the structured result (JSON-ready dict).
        read_only / destructive / idempotent: honest MCP annotations.
    """

    name: str
    description: str
    input_model: type[ModelT]
    run: Callable[[ToolContext, ModelT], Awaitable[dict[str, Any]]]
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    open_world: bool = True

    def definition(self) -> dict[str, Any]:
        """The MCP ``Tool`` object as a JSON-ready dict."""
        return {
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_model.model_json_schema(),
            "annotations": {
                "readOnlyHint": self.read_only,
                "destructiveHint": self.destructive,
                "idempotentHint": self.idempotent,
                "openWorldHint": self.open_world,
            },
        }


@dataclass
class Toolset:
    """A named group of built-in tools sharing adapters (e.g. ``data``, ``ops``, ``salesforce``).

    ``start``/``stop`` open and close whatever the adapters hold (HTTP clients, connections).
    """

    name: str
    tools: dict[str, BuiltinTool[Any]]
    start: Callable[[], Awaitable[None]] | None = None
    stop: Callable[[], Awaitable[None]] | None = None
