"""The governed call path: policy → audit intent → vault → upstream → redaction → audit outcome.

This module sees only the policy engine, the vault, the audit log and connections to upstreams;
it raises ``CallRefused`` subclasses and lets ``server.py`` turn them into protocol answers.

The order of a ``tools/call`` is fixed, because each step protects the next:

1. ``evaluate`` decides allow or deny (deny by default; a failing evaluation denies).
2. A denial is audited durably, then refused. Ungranted and unknown tools are refused alike, so a
   caller cannot probe for tools it may not see.
3. The intent record is made durable; if it cannot be, nothing further happens (no audit, no act).
4. The upstream is called with the gateway's own credentials.
5. Every vault value is scrubbed from the result, in every encoding the redactor knows.
6. The outcome record is made durable before the result is returned.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
from mcp.shared.inbound import x_mcp_header_map
from opentelemetry import trace

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.record import canonical, digest
from mcp_gateway.audit.sensitive import mask_sensitive
from mcp_gateway.connectors.mcp.upstream import UpstreamConnection
from mcp_gateway.core.builtin import builtin_specs, parse_arguments, result_payload, run_builtin
from mcp_gateway.core.governance import (
    ApprovalGate,
    QuotaGate,
    approval_reasons,
    args_hash,
    pending_result,
    quota_limits,
    split_approval,
)
from mcp_gateway.core.limits import (
    InFlight,
    LimitExceeded,
    LimitSettings,
    check_arguments,
    result_problem,
    truncate_result,
)
from mcp_gateway.core.state import PolicyHolder, SecretsView
from mcp_gateway.errors import (
    ApprovalRefused,
    AuditUnavailable,
    CallRefused,
    InvalidArguments,
    PolicyDenied,
    ToolDefinitionChanged,
    ToolNotGranted,
    UpstreamError,
    VaultSealed,
)
from mcp_gateway.pins.gate import PinGuard, approval_hint
from mcp_gateway.policy.evaluate import evaluate, granted_tools, is_granted
from mcp_gateway.policy.model import GrantGovernance
from mcp_gateway.policy.sensitive import sensitive_args, withhold_reasons
from mcp_gateway.redact import Redactor
from mcp_gateway.tools.base import BuiltinTool, NeedsApproval, ToolContext, Toolset
from mcp_gateway.types import AuditEvent, Decision, Principal, ToolSpec

__all__ = ["Gateway", "PolicyHolder", "SecretsView"]

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer("mcp_gateway")


def _call_span() -> AbstractContextManager[trace.Span]:
    """The span of one governed call. With no tracer provider configured every span is a no-op, but
    entering one still switches the context twice; then the call gets the invalid span directly."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return contextlib.nullcontext(trace.INVALID_SPAN)
    return _tracer.start_as_current_span("mcp_gateway.tools/call", record_exception=False)


# Tool names an agent sends are untrusted text; keep what we record of an unknown one short.
_MAX_TOOL_NAME = 200


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
    _tool_cache: dict[str, tuple[ToolSpec, Redactor, types.Tool]] = field(default_factory=dict)
    _binds_cache: dict[str, tuple[ToolSpec, bool]] = field(default_factory=dict)
    _in_flight: InFlight = field(init=False)
    _builtins: dict[str, tuple[ToolSpec, BuiltinTool[Any]]] = field(init=False)

    def __post_init__(self) -> None:
        self._in_flight = InFlight(self.limits.max_concurrent_calls_per_agent)
        self._builtins = builtin_specs(self.toolsets)

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
        for upstream in self.upstreams.values():
            tools.update(upstream.tools)
        if self.pins is not None and self.pins.blocked:
            # A tool whose definition changed since it was pinned is offered to no agent.
            tools = {name: spec for name, spec in tools.items() if name not in self.pins.blocked}
        return tools

    def tool_spec(self, name: str) -> ToolSpec | None:
        """``catalog().get(name)`` without building the whole catalog (once or twice per call)."""
        if self.pins is not None and name in self.pins.blocked:
            return None
        upstream = self.upstreams.get(name.split(".", 1)[0])
        if upstream is not None and (spec := upstream.tools.get(name)) is not None:
            return spec
        builtin = self._builtins.get(name)
        if builtin is not None:
            return builtin[0]
        # An upstream whose own name holds a dot is not found by the prefix above.
        return self.catalog().get(name) if any("." in key for key in self.upstreams) else None

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
        upstream = self.upstreams.get(name.split(".", 1)[0]) if "." in name else None
        return upstream is not None and bool(upstream.config.relay_requests)

    async def call_tool(
        self, principal: Principal, name: str, arguments: Mapping[str, Any]
    ) -> types.CallToolResult:
        """Run one governed call.

        Raises:
            ToolNotGranted: unknown or ungranted tool (after the denial is audited).
            PolicyDenied: a constraint or deny rule refused the arguments (after it is audited).
            VaultSealed: the upstream needs secrets and the vault is sealed (audited).
            AuditUnavailable: the intent or outcome could not be recorded.
        """
        call_id = uuid.uuid4().hex
        started = time.perf_counter()
        redactor = self.secrets.redactor()
        shown_name = redactor.scrub_text(name[:_MAX_TOOL_NAME])
        # No exception events: an exception's text can quote arguments or upstream output.
        with _call_span() as span:
            span.set_attribute("mcp_gateway.agent", principal.agent)
            span.set_attribute("mcp_gateway.tool", shown_name)
            try:
                # One redactor for the whole call: each refresh is a store query on the event loop.
                arguments, approval_id = split_approval(arguments)
                safe_args = await self._admit(principal, shown_name, arguments, call_id, redactor)
                try:
                    result = await self._governed_call(
                        principal, name, shown_name, arguments, safe_args, call_id, redactor, approval_id
                    )
                finally:
                    self._in_flight.release(principal.agent)
            except CallRefused as exc:
                span.set_attribute("mcp_gateway.decision", "deny")
                span.set_attribute("mcp_gateway.status", exc.kind)
                raise
            span.set_attribute("mcp_gateway.decision", "allow")
            span.set_attribute("mcp_gateway.status", "error" if result.is_error else "ok")
            span.set_attribute("mcp_gateway.latency_ms", (time.perf_counter() - started) * 1000)
            return result

    async def _admit(
        self,
        principal: Principal,
        shown_name: str,
        arguments: Mapping[str, Any],
        call_id: str,
        redactor: Redactor,
    ) -> Mapping[str, Any]:
        """Apply the limits, take an in-flight slot, and return the redacted arguments for the audit.

        Raises:
            LimitExceeded: after the refusal is audited (the arguments themselves are not recorded).
        """
        try:
            # Before anything walks the arguments: a deep or huge value is refused, not parsed.
            check_arguments(arguments, self.limits)
            self._in_flight.acquire(principal.agent)
        except LimitExceeded as exc:
            omitted = {"_omitted": "not recorded: the call was refused by a limit"}
            denial = Decision("deny", (), (str(exc),))
            raise await self._refuse(exc, principal, shown_name, omitted, call_id, denial, redactor) from None
        safe_args, _ = redactor.scrub_json(dict(arguments))
        return safe_args  # type: ignore[no-any-return]

    async def _refuse(
        self,
        exc: CallRefused,
        principal: Principal,
        shown_name: str,
        safe_args: Mapping[str, Any],
        call_id: str,
        decision: Decision,
        redactor: Redactor,
    ) -> CallRefused:
        event = AuditEvent(
            kind="denied",
            call_id=call_id,
            agent=principal.agent,
            tool=shown_name,
            decision="deny",
            status=exc.kind,
            args=safe_args,
            detail={
                "rule_ids": list(decision.rule_ids),
                "reasons": [redactor.scrub_text(r) for r in decision.reasons]
                or [redactor.scrub_text(str(exc))],
                "token_id": principal.token_id,
            },
        )
        try:
            await self.audit.append(event)
        except AuditUnavailable:
            # Still refused; the caller learns the refusal could not be recorded either.
            logger.error("audit unavailable while recording a denial of `%s`", shown_name)
        return exc

    async def _governed_call(
        self,
        principal: Principal,
        name: str,
        shown_name: str,
        arguments: Mapping[str, Any],
        safe_args: Mapping[str, Any],
        call_id: str,
        redactor: Redactor,
        approval_id: str | None = None,
    ) -> types.CallToolResult:
        policy = self.policy.policy
        scopes = principal.scopes if principal.source == "oauth" else None
        decision = evaluate(policy, principal.agent, name, arguments, scopes=scopes)
        sensitive = sensitive_args(policy, principal.agent, name)
        if sensitive:
            # Values marked sensitive reach the audit store only as keyed HMACs, and no reason quotes them.
            safe_args = mask_sensitive(safe_args, sensitive, self.audit_hmac_key, values=arguments)
            decision = withhold_reasons(decision, sensitive)
        if not decision.allowed:
            if not is_granted(policy, principal.agent, name, scopes=scopes):
                refusal: CallRefused = ToolNotGranted(f"tool `{shown_name}` is not available")
            else:
                reasons = "; ".join(redactor.scrub_text(r) for r in decision.reasons) or "denied"
                refusal = PolicyDenied(f"denied by policy: {reasons}", decision.rule_ids)
            raise await self._refuse(refusal, principal, shown_name, safe_args, call_id, decision, redactor)
        if self.pins is not None and self.pins.is_blocked(name):
            # Blocked for every agent, granted or not; only granted callers learn why (above).
            refusal = ToolDefinitionChanged(approval_hint(shown_name, self.pins.blocked[name].reason))
            denial = Decision("deny", (), (str(refusal),))  # no policy rule decided this
            raise await self._refuse(refusal, principal, shown_name, safe_args, call_id, denial, redactor)
        spec = self.tool_spec(name)
        upstream = self.upstreams.get(name.split(".", 1)[0]) if "." in name else None
        if spec is None:
            if upstream is not None and upstream.needs_vault:
                refusal = VaultSealed(f"vault is sealed: upstream `{upstream.name}` needs its secrets")
            elif upstream is not None and not upstream.connected:
                refusal = CallRefused(f"upstream `{upstream.name}` is unavailable")
            else:
                refusal = ToolNotGranted(f"tool `{shown_name}` is not available")
            raise await self._refuse(refusal, principal, shown_name, safe_args, call_id, decision, redactor)
        call = _Call(principal, name, shown_name, safe_args, call_id, decision, redactor)
        grant = policy.grant(decision.rule_ids[0]) if decision.rule_ids else None
        governance = grant.governance if grant is not None else GrantGovernance()
        builtin = self._builtins.get(name)
        model = None
        if builtin is not None:
            try:
                model = parse_arguments(builtin[1], arguments)
            except InvalidArguments as exc:
                raise await self._refuse(
                    exc, principal, shown_name, safe_args, call_id, decision, redactor
                ) from None
        # The approval id is the gateway's, not the tool's: it is neither hashed nor forwarded.
        asks = approval_reasons(governance, arguments, builtin is not None)
        if asks and approval_id is None:
            return await self._park(call, governance, arguments, asks, {})
        if self.quotas is not None:
            limits = quota_limits(policy, principal.agent, name, governance)
            if limits:
                try:
                    await self.quotas.hit(limits)
                except CallRefused as exc:
                    raise await self._refuse(
                        exc, principal, shown_name, safe_args, call_id, decision, redactor
                    ) from None
        if approval_id is not None:
            await self._consume_approval(call, approval_id, arguments)

        intent_detail: dict[str, Any] = {"rule_ids": list(decision.rule_ids), "token_id": principal.token_id}
        if approval_id is not None:
            intent_detail["approval_id"] = approval_id
        await self.audit.append(
            AuditEvent(
                kind="intent",
                call_id=call_id,
                agent=principal.agent,
                tool=shown_name,
                decision="allow",
                args=safe_args,
                detail=intent_detail,
            )
        )
        started = time.perf_counter()

        recorded = False  # whether an outcome record was made (the safety net below must not add one)

        def outcome(status: str, **detail: Any) -> AuditEvent:
            nonlocal recorded
            recorded = True
            latency = {"latency_ms": round((time.perf_counter() - started) * 1000, 3)}
            return AuditEvent(
                kind="outcome",
                call_id=call_id,
                agent=principal.agent,
                tool=shown_name,
                decision="allow",
                status=status,
                detail=latency | detail,
            )

        try:
            facts: dict[str, Any] = {}
            try:
                if builtin is not None and model is not None:
                    ctx = ToolContext(
                        principal=principal,
                        call_id=call_id,
                        grant_limits={"max_rows": governance.max_rows}
                        if governance.max_rows is not None
                        else {},
                        approval_conditions=governance.tool_conditions,
                        approved=approval_id is not None,
                        resolve_secret=self.secrets.resolve,
                        policy_extra=dict(policy.extra) | {"audit_lookup": self._outcome_of},
                        audit_detail=facts,
                    )
                    try:
                        payload, status = await run_builtin(builtin[1], ctx, model)
                    except NeedsApproval as exc:
                        await self.audit.append(outcome("pending_approval", reasons=[exc.reason]))
                        return await self._park(call, governance, arguments, [exc.reason], exc.detail)
                else:
                    connection = self.upstreams[spec.upstream]
                    payload = await connection.call_payload(spec.upstream_tool, dict(arguments))
                    status = "error" if payload.get("isError") is True else "ok"
            except UpstreamError as exc:
                payload = {"content": [{"type": "text", "text": str(exc)}], "isError": True}
                status = "upstream_error"
            except anyio.get_cancelled_exc_class():
                # The caller went away mid-call; the upstream may have acted, so the record must say so.
                with anyio.CancelScope(shield=True):
                    await self.audit.append(outcome("cancelled"))
                raise
            problem = result_problem(payload, max_depth=self.limits.max_result_depth)
            if problem is not None:
                where = f"upstream `{spec.upstream}`" if builtin is None else f"tool `{shown_name}`"
                payload = {
                    "content": [{"type": "text", "text": f"{where} answered {problem}"}],
                    "isError": True,
                }
                status = "upstream_error"
            # A redactor taken now, not at the start of the call: a secret written meanwhile refreshes the
            # view *before* any upstream reconnects with it, so this one knows every value the upstream held.
            after = self.secrets.redactor()
            scrubbed, redactions = after.scrub_json(payload)
            encoded = canonical(scrubbed)  # its size is the compact JSON's: sorting keys changes no length
            scrubbed, truncated = truncate_result(scrubbed, self.limits.max_result_bytes, size=len(encoded))
            try:
                result = types.CallToolResult.model_validate(scrubbed)
            except ValueError:
                result = types.CallToolResult(
                    content=[
                        types.TextContent(type="text", text=f"upstream `{spec.upstream}` answered garbage")
                    ],
                    is_error=True,
                )
                status = "upstream_error"
            extra: dict[str, Any] = {}
            if facts:
                # Before/after images, snapshot ids, run ids: scrubbed like the result they describe.
                extra["facts"], more = after.scrub_json(facts)
                redactions += more
            await self.audit.append(
                outcome(
                    status,
                    result_digest=digest(scrubbed) if truncated else hashlib.sha256(encoded).hexdigest(),
                    redactions=redactions,
                    redacted=redactions > 0,
                    truncated=truncated,
                    **extra,
                )
            )
            return result
        except Exception:
            # A failure no branch above expected (a bug, an answer nothing anticipated) after the intent
            # was recorded: the upstream may have acted, so the record says the call ended, and how.
            if not recorded:
                logger.exception("tools/call of `%s` failed after its intent was recorded", shown_name)
                with contextlib.suppress(AuditUnavailable):
                    await self.audit.append(outcome("internal_error"))
            raise

    async def _refuse_call(
        self, exc: CallRefused, call: _Call, safe_args: Mapping[str, Any] | None = None
    ) -> CallRefused:
        """``_refuse`` for a call whose facts are in ``call`` (audited; returns the error to raise)."""
        args = call.safe_args if safe_args is None else safe_args
        return await self._refuse(
            exc, call.principal, call.shown_name, args, call.call_id, call.decision, call.redactor
        )

    async def _park(
        self,
        call: _Call,
        governance: GrantGovernance,
        arguments: Mapping[str, Any],
        reasons: list[str],
        detail: Mapping[str, Any],
    ) -> types.CallToolResult:
        """Send the call to a human: record a pending approval, audit it, answer ``pending_approval``."""
        if self.approvals is None:
            refusal = ApprovalRefused("this call needs approval and no approval store is configured")
            raise await self._refuse_call(refusal, call)
        shown_reasons = [call.redactor.scrub_text(r) for r in reasons]
        safe_detail, _ = call.redactor.scrub_json(dict(detail))
        try:
            pending = await self.approvals.request(
                agent=call.principal.agent,
                tool=call.name,
                args_hash=args_hash(arguments),
                args=call.safe_args,
                reason="; ".join(shown_reasons),
                detail=safe_detail,
                ttl_seconds=governance.approval_ttl,
            )
        except ApprovalRefused as exc:
            raise await self._refuse_call(exc, call) from None
        await self.audit.append(
            AuditEvent(
                kind="approval_requested",
                call_id=call.call_id,
                agent=call.principal.agent,
                tool=call.shown_name,
                decision="pending",
                status="pending_approval",
                args=call.safe_args,
                detail={
                    "approval_id": pending.id,
                    "reasons": shown_reasons,
                    "expires_at": pending.expires_at,
                },
            )
        )
        # An error result: the call did not run (and an upstream tool's output schema does not
        # describe this answer, so a client must not validate it as the tool's output).
        return types.CallToolResult.model_validate(
            result_payload(pending_result(call.shown_name, pending, shown_reasons), is_error=True)
        )

    async def _consume_approval(self, call: _Call, approval_id: str, arguments: Mapping[str, Any]) -> None:
        """Use the approval for this exact call, once; a misuse is audited and refused."""
        if self.approvals is None:
            refusal: CallRefused = ApprovalRefused("approvals are not configured")
        else:
            try:
                await self.approvals.consume(
                    approval_id,
                    agent=call.principal.agent,
                    tool=call.name,
                    args_hash=args_hash(arguments),
                    call_id=call.call_id,
                )
                return
            except CallRefused as exc:
                refusal = exc
        raise await self._refuse_call(refusal, call, {**call.safe_args, "approval_id": approval_id})

    async def _outcome_of(self, call_id: str) -> Mapping[str, Any] | None:
        """The outcome record of an earlier call (for tools that undo one, e.g. a Salesforce revert)."""
        records = await anyio.to_thread.run_sync(lambda: self.audit.sink.query(call_id=call_id, limit=10))
        for record in reversed(records):
            if record.kind == "outcome":
                return {"agent": record.agent, "tool": record.tool, "status": record.status, **record.detail}
        return None


@dataclass(frozen=True, slots=True)
class _Call:
    """One call's facts that refusals and approvals need."""

    principal: Principal
    name: str
    shown_name: str
    safe_args: Mapping[str, Any]
    call_id: str
    decision: Decision
    redactor: Redactor
