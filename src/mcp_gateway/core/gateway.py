"""The gateway's tools: the catalog an agent may see, and ``tools/call`` through the governed skeleton.

``Gateway`` holds what the call path needs (policy, vault view, audit log, upstream connections,
the built-in toolsets, quota and approval gates) and the ``Governor`` (``governed.py``) that every
exchange passes. A ``tools/call`` is that skeleton with two things of its own: ``prepare`` (a tool that
is not there; a built-in tool's input model) and ``act`` (the upstream call, or the built-in tool).
Errors stay ``GatewayError``s here; ``http/`` turns them into protocol answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
from mcp.shared.inbound import x_mcp_header_map
from pydantic import BaseModel

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.connectors.mcp.upstream import UpstreamConnection
from mcp_gateway.core.builtin import builtin_specs, parse_arguments, result_payload, run_builtin
from mcp_gateway.core.exchange import Exchange, Granted, ResultRule, UnknownTarget
from mcp_gateway.core.governance import (
    ApprovalGate,
    PendingApproval,
    QuotaGate,
    pending_result,
    split_approval,
)
from mcp_gateway.core.governed import Governor
from mcp_gateway.core.limits import LimitSettings
from mcp_gateway.core.log_levels import LogLevels
from mcp_gateway.core.request_state import RequestStates, Resume
from mcp_gateway.core.rounds import is_input_required, pass_on
from mcp_gateway.core.state import PolicyHolder, SecretsView
from mcp_gateway.errors import CallRefused, UpstreamError, VaultSealed
from mcp_gateway.incidents.store import IncidentStore
from mcp_gateway.pins.gate import PinGuard
from mcp_gateway.policy.evaluate import granted_tools, is_granted
from mcp_gateway.redact import Redactor
from mcp_gateway.tools.base import BuiltinTool, ToolContext, Toolset
from mcp_gateway.types import Principal, ToolSpec

__all__ = ["Gateway", "PolicyHolder", "SecretsView"]

logger = logging.getLogger(__name__)


@dataclass
class Gateway:
    """Governs every call an agent makes."""

    policy: PolicyHolder
    secrets: SecretsView
    audit: AuditLog
    upstreams: Mapping[str, UpstreamConnection] = field(default_factory=dict)
    limits: LimitSettings = field(default_factory=LimitSettings)
    pins: PinGuard | None = None
    audit_hmac_key: bytes | None = field(default=None, repr=False)
    """Key of the HMACs that stand in for sensitive argument values; None: withheld without one."""
    toolsets: Mapping[str, Toolset] = field(default_factory=dict)
    """The gateway's own governed tools (``data``, ``ops``, ``salesforce``), by toolset name."""
    quotas: QuotaGate | None = None
    approvals: ApprovalGate | None = None
    """None: no approval store, so a call that needs approval is refused (never run unapproved)."""
    services: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    """Background tasks the server runs for the gateway's lifetime (e.g. the approval notifier)."""
    incidents: IncidentStore | None = None
    """The quality monitors' incidents, offered to agents as ``incident://<id>`` resources."""
    _tool_cache: dict[str, tuple[ToolSpec, Redactor, types.Tool]] = field(default_factory=dict)
    _binds_cache: dict[str, tuple[ToolSpec, bool]] = field(default_factory=dict)
    log_levels: LogLevels = field(default_factory=LogLevels)
    """What each 2025-11-25 session asked for with ``logging/setLevel`` (the relays consult it)."""
    states: RequestStates = field(default_factory=RequestStates)
    """Seals the ``requestState`` of 2026-07-28 ``input_required`` rounds passed on to agents."""
    governor: Governor = field(init=False)
    """The one governed skeleton every exchange passes (tools here; resources, prompts,
    completions in ``federation.py``; relayed requests in ``http/relay.py``)."""
    _builtins: dict[str, tuple[ToolSpec, BuiltinTool[Any]]] = field(init=False)

    def __post_init__(self) -> None:
        self._builtins = builtin_specs(self.toolsets)
        self.governor = Governor(
            policy=self.policy,
            secrets=self.secrets,
            audit=self.audit,
            limits=self.limits,
            pins=self.pins,
            quotas=self.quotas,
            approvals=self.approvals,
            audit_hmac_key=self.audit_hmac_key,
        )

    async def start_toolsets(self) -> None:
        """Open what the built-in toolsets hold (clients, connections)."""
        for toolset in self.toolsets.values():
            if toolset.start is not None:
                await toolset.start()

    async def stop_toolsets(self) -> None:
        """Close the toolsets; one that fails to close does not keep the others open."""
        for toolset in self.toolsets.values():
            if toolset.stop is not None:
                try:
                    await toolset.stop()
                except Exception:
                    logger.exception("toolset `%s` failed to stop", toolset.name)

    def catalog(self) -> dict[str, ToolSpec]:
        """Every tool the gateway can offer right now, by public name."""
        tools: dict[str, ToolSpec] = {name: spec for name, (spec, _) in self._builtins.items()}
        clashes: set[str] = set()
        for upstream in self.upstreams.values():
            clashes.update(tools.keys() & upstream.tools.keys())
            tools.update(upstream.tools)
        blocked = set(self.pins.blocked) if self.pins is not None else set()
        if clashes:
            logger.warning("tools offered by two sources are offered by neither: %s", sorted(clashes)[:20])
        if blocked or clashes:
            # A tool whose definition changed since it was pinned is offered to no agent.
            tools = {name: spec for name, spec in tools.items() if name not in blocked | clashes}
        return tools

    def tool_spec(self, name: str) -> ToolSpec | None:
        """``catalog().get(name)`` without building the whole catalog (once or twice per call)."""
        if self.pins is not None and name in self.pins.blocked:
            return None
        builtin = self._builtins.get(name)
        found = builtin[0] if builtin is not None else None
        for up in self.upstreams.values():  # a loop, not a list: this runs two or three times a call
            spec = up.tools.get(name)
            if spec is not None:
                if found is not None:
                    # A name two sources offer is offered by neither: which one acts must never be a guess.
                    return None
                found = spec
        return found

    def upstream_of(self, name: str) -> UpstreamConnection | None:
        """The upstream whose prefix ``name`` carries (the longest, when prefixes nest)."""
        best: UpstreamConnection | None = None
        for up in self.upstreams.values():  # the first of the longest, as `max` would pick
            if name.startswith(up.prefix) and (best is None or len(up.prefix) > len(best.prefix)):
                best = up
        return best

    def _tool(self, spec: ToolSpec, redactor: Redactor) -> types.Tool:
        # Upstream definitions are untrusted text: a malicious upstream can put secrets in a
        # description. Rebuilt only when the definition or the redactor is a new object.
        cached = self._tool_cache.get(spec.name)
        if cached is None or cached[0] is not spec or cached[1] is not redactor:
            definition, _ = redactor.scrub_json(spec.definition)
            cached = (spec, redactor, types.Tool.model_validate(definition))
            self._tool_cache[spec.name] = cached
        return cached[2]

    def list_tools(self, principal: Principal) -> list[types.Tool]:
        """The tools ``principal`` is granted, and no others."""
        if self.pins is not None:
            self.pins.refresh()  # reads the pin store only while a tool is blocked
        catalog = self.catalog()
        # Grant `scopes` narrow OAuth callers only; an agent token (None) is not filtered.
        scopes = principal.scopes if principal.source == "oauth" else None
        names = granted_tools(self.policy.policy, principal.agent, catalog, scopes=scopes)
        redactor = self.secrets.redactor()
        return [self._tool(catalog[name], redactor) for name in sorted(names)]

    def input_schema(self, principal: Principal, name: str) -> dict[str, Any] | None:
        """The input schema of ``name`` if ``principal`` may see that tool, else None."""
        spec = self.tool_spec(name)
        scopes = principal.scopes if principal.source == "oauth" else None
        if spec is None or not is_granted(self.policy.policy, principal.agent, name, scopes=scopes):
            return None
        schema = spec.definition.get("inputSchema")
        return dict(schema) if isinstance(schema, dict) else None

    def binds_param_headers(self, name: str) -> bool:
        """Whether tool ``name`` binds arguments to ``Mcp-Param-*`` headers (``x-mcp-header`` in its
        input schema). Without a binding the SDK's header check has nothing to compare; the lean path
        skips it. Walked once per tool definition."""
        spec = self.tool_spec(name)
        if spec is None:
            return False
        cached = self._binds_cache.get(name)
        if cached is None or cached[0] is not spec:
            schema = spec.definition.get("inputSchema")
            cached = (spec, isinstance(schema, dict) and bool(x_mcp_header_map(schema)))
            self._binds_cache[name] = cached
        return cached[1]

    def relays_requests(self, name: str) -> bool:
        """Whether the upstream behind tool ``name`` may send requests to the calling client."""
        spec = self.tool_spec(name)
        upstream = self.upstreams.get(spec.upstream) if spec is not None else None
        return upstream is not None and bool(upstream.config.relay_requests)

    async def call_tool(
        self, principal: Principal, name: str, arguments: Mapping[str, Any], resume: Resume | None = None
    ) -> types.CallToolResult | types.InputRequiredResult:
        """Run one governed ``tools/call`` (the skeleton in ``governed.py``).

        ``resume`` carries a 2026-07-28 retry: the agent's input responses and the ``requestState``
        the gateway sealed for it (``rounds.py``); the answer may be another ``input_required`` round.

        Raises:
            ToolNotGranted: unknown or ungranted tool (after the denial is audited).
            CallRefused: a constraint, limit, pin, approval or quota refused it; the vault is sealed
                and the upstream needs its secrets; a ``requestState`` that is not this call's (audited).
            ProtocolRefusal: an error the agent must get as it is (-32021, ...), after the outcome.
            AuditUnavailable: the intent or outcome could not be recorded.
        """
        # The approval id is the gateway's, not the tool's: it is neither hashed nor forwarded.
        arguments, approval_id = split_approval(arguments)
        builtin = self._builtins.get(name)
        upstream = self.upstream_of(name) if builtin is None else None
        where = f"upstream `{upstream.name}`" if upstream is not None else "the upstream"
        exchange = Exchange(
            principal,
            "tools/call",
            name,
            arguments,
            approval_id=approval_id,
            builtin=builtin is not None,
            where=where,
        )
        parsed: list[BaseModel] = []
        upstream_state: list[str | None] = []

        async def prepare(_: Exchange) -> None:
            if resume is not None and resume.request_state is not None:
                # Before the upstream sees anything: the state must be the one sealed for this call.
                upstream_state.append(
                    await self.states.open(resume.request_state, principal, "tools/call", name, arguments)
                )
            spec = self.tool_spec(name)
            if spec is None:
                if upstream is not None and upstream.needs_vault:
                    raise VaultSealed(f"vault is sealed: upstream `{upstream.name}` needs its secrets")
                if upstream is not None and not upstream.connected:
                    raise CallRefused(f"upstream `{upstream.name}` is unavailable")
                raise UnknownTarget()
            if builtin is not None:
                parsed.append(parse_arguments(builtin[1], arguments))

        async def act(granted: Granted) -> tuple[dict[str, Any], str]:
            if builtin is not None:
                governance = granted.governance
                ctx = ToolContext(
                    principal=principal,
                    call_id=granted.call_id,
                    grant_limits=governance.limits(),
                    approval_conditions=governance.tool_conditions,
                    approved=granted.approved,
                    resolve_secret=self.secrets.resolve,
                    policy_extra=dict(self.policy.policy.extra) | {"audit_lookup": self._outcome_of},
                    audit_detail=granted.facts,
                )
                return await run_builtin(builtin[1], ctx, parsed[0])
            spec = self.tool_spec(name)
            if spec is None or spec.upstream not in self.upstreams:
                raise UpstreamError(f"tool `{name[:200]}` is no longer available")
            connection = self.upstreams[spec.upstream]
            payload = await connection.call_payload(
                spec.upstream_tool,
                dict(arguments),
                input_responses=resume.input_responses if resume is not None else None,
                request_state=upstream_state[0] if upstream_state else None,
            )
            if is_input_required(payload):
                relayed = connection.config.relay_requests
                return pass_on(
                    payload, exchange, upstream=connection.name, relay_requests=relayed, states=self.states
                )
            return payload, "error" if payload.get("isError") is True else "ok"

        return await self.governor.run(exchange, act, TOOL_RESULT, prepare=prepare)

    async def _outcome_of(self, call_id: str) -> Mapping[str, Any] | None:
        """The outcome record of an earlier call (for tools that undo one, e.g. a Salesforce revert)."""
        records = await anyio.to_thread.run_sync(lambda: self.audit.sink.query(call_id=call_id, limit=10))
        for record in reversed(records):
            if record.kind == "outcome":
                return {"agent": record.agent, "tool": record.tool, "status": record.status, **record.detail}
        return None


def _pending(shown: str, pending: PendingApproval, reasons: list[str]) -> dict[str, Any]:
    # An error result: the call did not run (and an upstream tool's output schema does not describe
    # this answer, so a client must not validate it as the tool's output).
    return result_payload(pending_result(shown, pending, reasons), is_error=True)


TOOL_RESULT = ResultRule(types.CallToolResult, oversize="truncate", failure="result", pending=_pending)
"""A tool's answer: an oversized one is cut with a marker, a failure is an ``isError`` result."""
