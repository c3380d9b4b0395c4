"""The one governed skeleton: every exchange between an agent and an upstream passes ``Governor.run``.

``tools/call``, ``resources/read``, ``prompts/get``, ``completion/complete`` from the agent, and the
requests an upstream relays to the agent (sampling, elicitation), take the same steps in the same
order, each a short named method below:

    1. limits      argument size and depth, before anything walks them
    2. authorize   policy.evaluate(agent, target, arguments): deny by default, a deny rule wins;
                   then an in-flight slot for the agent
    3. pins        a target whose definition changed since it was pinned is refused (its upstream
                   re-listed first when the last check is older than ``pinning.recheck_seconds``)
    4. prepare     the caller's own admission check (a tool that is not there, arguments a built-in
                   tool's input model refuses), audited like any refusal
    5. approval    park the exchange for a human, or consume the approval it carries (exactly once)
    6. quota       count it against every quota that applies, or refuse with the retry time
    7. intent      the audit record, durable before anything acts (no audit, no act)
    8. act         the caller's one step (an upstream request, a built-in tool, the agent's client)
    9. result      depth and Unicode checks, vault values scrubbed (for the record), the size rule
   10. outcome     the audit record, durable before the answer returns

What differs between callers is only ``act`` and the ``ResultRule``. Refusals at steps 1-6 are
audited (``denied``) before they are raised; every failure after step 7 still records an outcome.
What reaches the agent passes one more scrubber on the wire (``http/egress.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.sensitive import mask_sensitive
from mcp_gateway.core.exchange import (
    MAX_SHOWN,
    Act,
    Authorize,
    Call,
    Exchange,
    Granted,
    M,
    Prepare,
    ResultRule,
    UnknownTarget,
    failed,
)
from mcp_gateway.core.governance import (
    ApprovalGate,
    QuotaGate,
    approval_reasons,
    args_hash,
    quota_limits,
)
from mcp_gateway.core.limits import InFlight, LimitExceeded, LimitSettings, check_arguments
from mcp_gateway.core.refusals import record_refusal
from mcp_gateway.core.result import settle
from mcp_gateway.core.state import PolicyHolder, SecretsView
from mcp_gateway.errors import (
    ApprovalRefused,
    AuditUnavailable,
    CallRefused,
    InvalidArguments,
    PolicyDenied,
    ProtocolRefusal,
    UpstreamError,
)
from mcp_gateway.pins.gate import PinGuard
from mcp_gateway.policy.evaluate import evaluate, is_granted
from mcp_gateway.policy.history_store import REPLICA
from mcp_gateway.policy.model import GrantGovernance
from mcp_gateway.policy.sensitive import sensitive_args, withhold_reasons
from mcp_gateway.telemetry import trace_exchange
from mcp_gateway.tools.base import NeedsApproval
from mcp_gateway.types import Decision

logger = logging.getLogger(__name__)

_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))  # the variant and version bits
_UUID4_SET = (0x8000 << 48) | (4 << 76)  # RFC 4122 variant, version 4


@dataclass
class Governor:
    """The skeleton's collaborators; ``run`` is the one governed path."""

    policy: PolicyHolder
    secrets: SecretsView
    audit: AuditLog
    limits: LimitSettings = field(default_factory=LimitSettings)
    pins: PinGuard | None = None
    quotas: QuotaGate | None = None
    approvals: ApprovalGate | None = None
    audit_hmac_key: bytes | None = field(default=None, repr=False)
    _in_flight: InFlight = field(init=False)

    def __post_init__(self) -> None:
        self._in_flight = InFlight(self.limits.max_concurrent_calls_per_agent)

    async def run(
        self,
        exchange: Exchange,
        act: Act,
        rule: ResultRule[M],
        *,
        prepare: Prepare | None = None,
        authorize: Authorize | None = None,
        slot: str | None = None,
    ) -> M | types.InputRequiredResult:
        """Govern one exchange (see the module doc) and return its answer.

        Args:
            exchange: who asks what of which target.
            act: the one step that does it.
            rule: what the answer must be.
            prepare: the caller's admission check (raises ``CallRefused``), after authorization.
            authorize: decides instead of the policy (relayed requests: the upstream's config).
            slot: whose in-flight slot the exchange takes (default the agent's).

        Raises:
            ToolNotGranted: unknown or ungranted target (after the denial is audited).
            CallRefused: a constraint, limit, pin, approval or quota refused it (audited).
            AuditUnavailable: the intent or outcome could not be recorded (nothing acted / no answer).
            UpstreamError: the act failed under a ``raise`` rule (after the outcome is audited).
        """
        # What `uuid.uuid4().hex` gives, without building a `UUID` (three Python calls per exchange).
        call_id = f"{int.from_bytes(os.urandom(16)) & _UUID4_CLEAR | _UUID4_SET:032x}"
        redactor = self.secrets.redactor()  # one per exchange: each refresh is a store query
        shown = redactor.scrub_text(exchange.target[:MAX_SHOWN])
        with trace_exchange(
            exchange.method, shown, agent=exchange.principal.agent, label=exchange.label, redactor=redactor
        ) as traced:
            call = Call(exchange, call_id, shown, redactor)
            try:
                agent_slot = slot or exchange.principal.agent
                await self._limits(call)  # before anything walks the arguments (policy, redaction)
                governance = await self._authorize(call, authorize)
                await self._slot(call, agent_slot)
                try:
                    await self._pinned(call)
                    if prepare is not None:
                        await self._guard(call, prepare)
                    parked = await self._approval(call, governance, rule)
                    if parked is not None:
                        traced.parked()
                        return parked
                    await self._quota(call, governance)
                    result = await self._act(call, governance, act, rule)
                finally:
                    self._in_flight.release(agent_slot)
            except CallRefused as exc:
                traced.refused(exc.kind)
                raise
            traced.answered(result)
            return result

    # --- 1. authorize ---------------------------------------------------------------------------

    async def _authorize(self, call: Call, authorize: Authorize | None) -> GrantGovernance:
        exchange = call.exchange
        principal = exchange.principal
        policy = self.policy.policy
        encoded = call.encoded_args
        if encoded is not None and call.redactor.clean_json(encoded):
            safe_args: Mapping[str, Any] = dict(exchange.arguments)  # nothing to scrub: one search
        else:
            safe_args = call.redactor.scrub_json(dict(exchange.arguments))[0]
        if authorize is not None:
            decision = authorize(exchange)
            call.record(safe_args, decision)
            if not decision.allowed:
                raise await self._refuse(call, call.unavailable())
            return GrantGovernance()
        scopes = principal.scopes if principal.source == "oauth" else None
        key = exchange.policy_key
        decision = evaluate(policy, principal.agent, key, exchange.arguments, scopes=scopes)
        call.policy_version = policy.version
        sensitive = sensitive_args(policy, principal.agent, key)
        if sensitive:
            # Values marked sensitive reach the audit store only as keyed HMACs, and no reason quotes them.
            safe_args = mask_sensitive(safe_args, sensitive, self.audit_hmac_key, values=exchange.arguments)
            decision = withhold_reasons(decision, sensitive)
        call.record(safe_args, decision)
        if not decision.allowed:
            if not is_granted(policy, principal.agent, key, scopes=scopes):
                raise await self._refuse(call, call.unavailable())
            reasons = "; ".join(call.redactor.scrub_text(r) for r in decision.reasons) or "denied"
            raise await self._refuse(call, PolicyDenied(f"denied by policy: {reasons}", decision.rule_ids))
        grant = policy.grant(decision.rule_ids[0]) if decision.rule_ids else None
        return grant.governance if grant is not None else GrantGovernance()

    # --- 2.-6. admission ------------------------------------------------------------------------

    async def _limits(self, call: Call) -> None:
        try:
            # Before anything walks the arguments: a deep or huge value is refused, not parsed.
            call.encoded_args = check_arguments(call.exchange.arguments, self.limits)
        except (LimitExceeded, InvalidArguments) as exc:
            raise await self._refused_by_limit(call, exc) from None

    async def _slot(self, call: Call, slot: str) -> None:
        try:
            self._in_flight.acquire(slot)
        except LimitExceeded as exc:
            raise await self._refused_by_limit(call, exc) from None

    async def _refused_by_limit(self, call: Call, exc: CallRefused) -> CallRefused:
        omitted = {"_omitted": "not recorded: the call was refused by a limit"}
        return await self._refuse(call, exc, Decision("deny", (), (str(exc),)), omitted)

    async def _guard(self, call: Call, check: Prepare) -> None:
        try:
            if (pending := check(call.exchange)) is not None:  # a coroutine when it waits on a store
                await pending
        except UnknownTarget:
            raise await self._refuse(call, call.unavailable()) from None
        except CallRefused as exc:
            raise await self._refuse(call, exc) from None

    async def _pinned(self, call: Call) -> None:
        if self.pins is None:
            return
        # Re-lists the target's upstream first if its definition was not checked recently (or the
        # upstream announced a change); blocked for every agent, granted or not.
        refusal = await self.pins.check(call.exchange.target, call.shown)
        if refusal is not None:
            raise await self._refuse(call, refusal, Decision("deny", (), (str(refusal),)))

    async def _approval(self, call: Call, governance: GrantGovernance, rule: ResultRule[M]) -> M | None:
        exchange = call.exchange
        asks = approval_reasons(governance, exchange.arguments, exchange.builtin)
        if asks and exchange.approval_id is None:
            return await self._park(call, governance, rule, asks, {})
        if exchange.approval_id is not None:
            await self._consume(call)
        return None

    async def _quota(self, call: Call, governance: GrantGovernance) -> None:
        if self.quotas is None:
            return
        exchange = call.exchange
        limits = quota_limits(self.policy.policy, exchange.principal.agent, exchange.policy_key, governance)
        if limits:
            try:
                await self.quotas.hit(limits)
            except CallRefused as exc:
                raise await self._refuse(call, exc) from None

    # --- 7.-10. intent, act, result, outcome ----------------------------------------------------

    async def _act(
        self, call: Call, governance: GrantGovernance, act: Act, rule: ResultRule[M]
    ) -> M | types.InputRequiredResult:
        exchange = call.exchange
        detail: dict[str, Any] = {
            "rule_ids": list(call.decision.rule_ids),
            "token_id": exchange.principal.token_id,
            "replica": REPLICA,
        }
        if call.policy_version:
            detail["policy"] = call.policy_version
        if exchange.method != "tools/call":
            detail["method"] = exchange.method
        if exchange.approval_id is not None:
            detail["approval_id"] = exchange.approval_id
        # Durable before anything acts: no audit, no act (AuditUnavailable propagates).
        await self.audit.append(call.event("intent", decision="allow", args=call.safe_args, detail=detail))
        started = time.perf_counter()
        granted = Granted(call.call_id, governance, exchange.approval_id is not None)
        recorded = False

        async def outcome(status: str, **more: Any) -> None:
            nonlocal recorded
            recorded = True
            latency = {"latency_ms": round((time.perf_counter() - started) * 1000, 3)}
            await self.audit.append(
                call.event("outcome", decision="allow", status=status, detail=latency | more)
            )

        try:
            try:
                payload, status = await act(granted)
            except UpstreamError as exc:
                message = call.redactor.scrub_text(str(exc))
                if rule.failure == "raise":
                    await outcome("upstream_error")
                    raise UpstreamError(message) from None
                payload, status = failed(message), "upstream_error"
            except ProtocolRefusal as exc:
                # An error the agent must get as it is (-32021, ...): recorded, then passed on scrubbed.
                await outcome("protocol_error", code=exc.code)
                data, _ = call.redactor.scrub_json(exc.data)
                raise ProtocolRefusal(call.redactor.scrub_text(str(exc)), code=exc.code, data=data) from None
            except NeedsApproval as exc:
                # What the tool established before asking (e.g. dbt tests run on a branch) is on the record.
                facts = {"facts": call.redactor.scrub_json(granted.facts)[0]} if granted.facts else {}
                await outcome("pending_approval", reasons=[exc.reason], **facts)
                parked = await self._park(call, governance, rule, [exc.reason], exc.detail)
                if parked is None:  # pragma: no cover - _park returns or raises
                    raise
                return parked
            except anyio.get_cancelled_exc_class():
                # The caller went away mid-exchange; the upstream may have acted: the record says so.
                with anyio.CancelScope(shield=True):
                    await outcome("cancelled")
                raise
            return await settle(
                call, payload, status, granted.facts, rule, outcome, self.limits, self.secrets
            )
        except Exception:
            # A failure nothing above expected, after the intent: the record says the exchange ended.
            if not recorded:
                logger.exception(
                    "%s of `%s` failed after its intent was recorded", exchange.method, call.shown
                )
                with contextlib.suppress(AuditUnavailable):
                    await outcome("internal_error")
            raise

    async def _refuse(
        self,
        call: Call,
        exc: CallRefused,
        decision: Decision | None = None,
        safe_args: Mapping[str, Any] | None = None,
    ) -> CallRefused:
        """Audit a refusal (``refusals.record_refusal``); returns the error to raise."""
        return await record_refusal(self.audit, call, exc, decision, safe_args)

    async def _park(
        self,
        call: Call,
        governance: GrantGovernance,
        rule: ResultRule[M],
        reasons: list[str],
        detail: Mapping[str, Any],
    ) -> M:
        """Send the exchange to a human: record a pending approval, audit it, answer ``pending``."""
        if self.approvals is None or rule.pending is None:
            why = (
                "no approval store is configured"
                if self.approvals is None
                else "approvals cover tools/call only"
            )
            raise await self._refuse(call, ApprovalRefused(f"this call needs approval and {why}"))
        shown_reasons = [call.redactor.scrub_text(r) for r in reasons]
        safe_detail, _ = call.redactor.scrub_json(dict(detail))
        exchange = call.exchange
        try:
            pending = await self.approvals.request(
                agent=exchange.principal.agent,
                tool=exchange.policy_key,
                args_hash=args_hash(exchange.arguments),
                args=call.safe_args,
                reason="; ".join(shown_reasons),
                detail=safe_detail,
                ttl_seconds=governance.approval_ttl,
                min_approvers=governance.approval_min_approvers,
            )
        except ApprovalRefused as exc:
            raise await self._refuse(call, exc) from None
        await self.audit.append(
            call.event(
                "approval_requested",
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
        return rule.model.model_validate(rule.pending(call.shown, pending, shown_reasons))

    async def _consume(self, call: Call) -> None:
        """Use the exchange's approval for exactly this call, once; a misuse is audited and refused."""
        exchange = call.exchange
        approval_id = exchange.approval_id
        assert approval_id is not None  # noqa: S101 - the caller checked
        if self.approvals is None:
            refusal: CallRefused = ApprovalRefused("approvals are not configured")
        else:
            try:
                await self.approvals.consume(
                    approval_id,
                    agent=exchange.principal.agent,
                    tool=exchange.policy_key,
                    args_hash=args_hash(exchange.arguments),
                    call_id=call.call_id,
                )
                return
            except CallRefused as exc:
                refusal = exc
        raise await self._refuse(call, refusal, safe_args={**call.safe_args, "approval_id": approval_id})
