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

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from opentelemetry import trace

from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.record import digest
from mcp_gateway.audit.sensitive import mask_sensitive
from mcp_gateway.config import LimitSettings
from mcp_gateway.connectors.mcp_upstream import UpstreamConnection
from mcp_gateway.errors import (
    AuditUnavailable,
    CallRefused,
    IntegrityError,
    PolicyDenied,
    PolicyLoadError,
    ToolDefinitionChanged,
    ToolNotGranted,
    UpstreamError,
    VaultSealed,
)
from mcp_gateway.limits import InFlight, LimitExceeded, check_arguments, truncate_result
from mcp_gateway.pin_guard import PinGuard, approval_hint
from mcp_gateway.policy.evaluate import evaluate, granted_tools, is_granted
from mcp_gateway.policy.load import load_policy
from mcp_gateway.policy.model import Policy
from mcp_gateway.policy.sensitive import sensitive_args, withhold_reasons
from mcp_gateway.redact import EMPTY, Redactor
from mcp_gateway.types import AuditEvent, Decision, Principal, SecretValue, ToolSpec
from mcp_gateway.vault.crypto import Keyring
from mcp_gateway.vault.store import Vault

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer("mcp_gateway")

# Tool names an agent sends are untrusted text; keep what we record of an unknown one short.
_MAX_TOOL_NAME = 200


class PolicyHolder:
    """The running policy; a reload that fails keeps the last good one."""

    def __init__(self, path: Path, policy: Policy) -> None:
        self.path = path
        self.policy = policy
        self.last_error: str | None = None

    @classmethod
    def load(cls, path: Path) -> PolicyHolder:
        """Load the initial policy. Raises ``PolicyLoadError``: a gateway must not start on a bad one."""
        return cls(path, load_policy(path))

    def reload(self) -> PolicyLoadError | None:
        """Re-read the policy files; on error keep the running policy and return the error."""
        try:
            self.policy = load_policy(self.path)
        except PolicyLoadError as exc:
            self.last_error = str(exc)
            return exc
        self.last_error = None
        return None


class SecretsView:
    """The vault's plaintexts for injection and the redactor built from them, refreshed on change.

    The redactor keeps every value this process has seen, not only the current ones: after a
    secret is replaced, an upstream may still hold (and echo) the old value until it reconnects.

    Args:
        vault: the vault.
        reload_keys: re-reads the master keys (after ``vault rotate-master`` in another process).
        on_change: called with the names whose values changed, so their users can reconnect.
    """

    def __init__(
        self,
        vault: Vault,
        *,
        reload_keys: Callable[[], Keyring | None] | None = None,
        on_change: Callable[[set[str]], None] | None = None,
    ) -> None:
        self.vault = vault
        self._reload_keys = reload_keys
        self.on_change = on_change
        self._generation: int | None = None
        self._redactor: Redactor = EMPTY
        self._values: dict[str, SecretValue] = {}
        self._seen: dict[bytes, SecretValue] = {}

    def _refresh(self) -> None:
        if self.vault.sealed:
            return
        generation = self.vault.generation()
        if generation == self._generation:
            return
        try:
            values = self.vault.resolve_all()
        except IntegrityError:
            # After `vault rotate-master` the envelopes are sealed by a key this process has not
            # loaded yet: re-read the key source once, then give up loudly.
            if self._reload_keys is None:
                raise
            self.vault.reload_keyring(self._reload_keys())
            values = self.vault.resolve_all()
        changed = {
            name
            for name in values.keys() | self._values.keys()
            if (old := self._values.get(name)) is None
            or (new := values.get(name)) is None
            or old.reveal() != new.reveal()
        }
        first = self._generation is None
        self._values = values
        for value in values.values():
            self._seen[value.reveal()] = value
        self._redactor = Redactor.from_secrets(self._seen.values())
        self._generation = generation
        if changed and not first and self.on_change is not None:
            self.on_change(changed)

    def current_redactor(self) -> Redactor:
        """The redactor as last refreshed (no I/O: safe inside logging)."""
        return self._redactor

    def redactor(self) -> Redactor:
        try:
            self._refresh()
        except IntegrityError:
            logger.exception("vault integrity failure while refreshing the redactor")
        return self._redactor

    def resolve(self, name: str) -> SecretValue:
        """Resolve ``name``. Raises ``VaultSealed``, ``SecretNotFound``, ``IntegrityError``."""
        if self.vault.sealed:
            raise VaultSealed(f"vault is sealed: secret `{name}` cannot be resolved")
        self._refresh()
        value = self._values.get(name)
        return value if value is not None else self.vault.resolve(name)


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
    _tool_cache: dict[str, tuple[ToolSpec, Redactor, types.Tool]] = field(default_factory=dict)
    _in_flight: InFlight = field(init=False)

    def __post_init__(self) -> None:
        self._in_flight = InFlight(self.limits.max_concurrent_calls_per_agent)

    def catalog(self) -> dict[str, ToolSpec]:
        """Every tool the gateway can offer right now, by public name."""
        tools: dict[str, ToolSpec] = {}
        for upstream in self.upstreams.values():
            tools.update(upstream.tools)
        if self.pins is not None and self.pins.blocked:
            # A tool whose definition changed since it was pinned is offered to no agent.
            tools = {name: spec for name, spec in tools.items() if name not in self.pins.blocked}
        return tools

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
        spec = self.catalog().get(name)
        scopes = principal.scopes if principal.source == "oauth" else None
        if spec is None or not is_granted(self.policy.policy, principal.agent, name, scopes=scopes):
            return None
        schema = spec.definition.get("inputSchema")
        return dict(schema) if isinstance(schema, dict) else None

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
        with _tracer.start_as_current_span("mcp_gateway.tools/call", record_exception=False) as span:
            span.set_attribute("mcp_gateway.agent", principal.agent)
            span.set_attribute("mcp_gateway.tool", shown_name)
            try:
                # One redactor for the whole call: each refresh is a store query on the event loop.
                safe_args = await self._admit(principal, shown_name, arguments, call_id, redactor)
                try:
                    result = await self._governed_call(
                        principal, name, shown_name, arguments, safe_args, call_id, redactor
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
        spec = self.catalog().get(name)
        upstream = self.upstreams.get(name.split(".", 1)[0]) if "." in name else None
        if spec is None:
            if upstream is not None and upstream.needs_vault:
                refusal = VaultSealed(f"vault is sealed: upstream `{upstream.name}` needs its secrets")
            elif upstream is not None and not upstream.connected:
                refusal = CallRefused(f"upstream `{upstream.name}` is unavailable")
            else:
                refusal = ToolNotGranted(f"tool `{shown_name}` is not available")
            raise await self._refuse(refusal, principal, shown_name, safe_args, call_id, decision, redactor)

        await self.audit.append(
            AuditEvent(
                kind="intent",
                call_id=call_id,
                agent=principal.agent,
                tool=shown_name,
                decision="allow",
                args=safe_args,
                detail={"rule_ids": list(decision.rule_ids), "token_id": principal.token_id},
            )
        )
        started = time.perf_counter()

        def outcome(status: str, **detail: Any) -> AuditEvent:
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

        connection = self.upstreams[spec.upstream]
        try:
            raw = await connection.call(spec.upstream_tool, dict(arguments))
            payload: dict[str, Any] = raw.model_dump(by_alias=True, mode="json", exclude_none=True)
            status = "error" if raw.is_error else "ok"
        except UpstreamError as exc:
            payload = {"content": [{"type": "text", "text": str(exc)}], "isError": True}
            status = "upstream_error"
        except anyio.get_cancelled_exc_class():
            # The caller went away mid-call; the upstream may have acted, so the record must say so.
            with anyio.CancelScope(shield=True):
                await self.audit.append(outcome("cancelled"))
            raise
        # A redactor taken now, not at the start of the call: a secret written meanwhile refreshes the
        # view *before* any upstream reconnects with it, so this one knows every value the upstream held.
        scrubbed, redactions = self.secrets.redactor().scrub_json(payload)
        scrubbed, truncated = truncate_result(scrubbed, self.limits.max_result_bytes)
        try:
            result = types.CallToolResult.model_validate(scrubbed)
        except ValueError:
            result = types.CallToolResult(
                content=[types.TextContent(type="text", text=f"upstream `{spec.upstream}` answered garbage")],
                is_error=True,
            )
            status = "upstream_error"
        await self.audit.append(
            outcome(
                status,
                result_digest=digest(scrubbed),
                redactions=redactions,
                redacted=redactions > 0,
                truncated=truncated,
            )
        )
        return result
