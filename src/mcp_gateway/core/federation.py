"""Federation of upstream resources, resource templates, prompts and completions, gated by policy.

Deny by default, as for tools:

- an upstream's prompt ``P`` is offered as ``<upstream>.P`` and only to agents granted
  ``prompt:<upstream>.P``;
- a resource with URI ``U`` is listed and readable only by agents granted ``resource:<upstream>:U``
  (a template ``T`` and completions against it need ``resource:<upstream>:T``).

URIs are not renamed; the gateway keeps, per upstream, the URIs and templates its listings returned,
so it knows which upstream owns a URI (a URI no upstream listed and no template matches is unknown).
An unknown and an ungranted name or URI are refused alike, naming only what was asked for.

Every ``resources/read`` and ``prompts/get`` is audited like a tool call: a durable intent before the
upstream is touched (none, no act), a durable outcome after; denials are audited before the refusal.
Everything an upstream says passes through the redactor before it reaches the agent.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import mcp_types as types
from pydantic import BaseModel

from mcp_gateway.audit.record import digest
from mcp_gateway.connectors.mcp.upstream import UpstreamConnection
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.core.limits import LimitExceeded, check_arguments
from mcp_gateway.errors import CallRefused, ToolNotGranted, UpstreamError
from mcp_gateway.policy.evaluate import is_granted
from mcp_gateway.types import AuditEvent, Principal

logger = logging.getLogger(__name__)

_M = TypeVar("_M", bound=BaseModel)
_R = TypeVar("_R")
_MAX_SHOWN = 300  # what we record of an untrusted name or URI that matched nothing


RUNBOOK_SCHEME = "runbook://"
"""Runbooks from policy are resources of the gateway itself: ``runbook://<job>``."""


def template_pattern(template: str) -> re.Pattern[str]:
    """A regex matching the URIs an RFC 6570 template expands to (``{x}``: one segment, ``{+x}``: any)."""
    parts: list[str] = []
    for literal, expr in re.findall(r"([^{]*)(\{[^}]*\})?", template):
        parts.append(re.escape(literal))
        if expr:
            parts.append(".+" if expr[1:2] in "+#" else r"[^/?#]+")
    return re.compile("".join(parts) + r"\Z")


class Federation:
    """Lists, reads and completes upstream resources and prompts for one gateway, under its policy."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._uris: dict[str, set[str]] = {}
        self._templates: dict[str, dict[str, re.Pattern[str]]] = {}

    def _granted(self, principal: Principal, key: str) -> bool:
        scopes = principal.scopes if principal.source == "oauth" else None
        return is_granted(self.gateway.policy.policy, principal.agent, key, scopes=scopes)

    def _connected(self, capability: str) -> list[UpstreamConnection]:
        return [up for up in self.gateway.upstreams.values() if up.supports(capability)]

    def _scrub(self, model: _M) -> _M:
        # Upstream text is untrusted: a description or a result may echo a secret.
        data, _ = self.gateway.secrets.redactor().scrub_json(
            model.model_dump(by_alias=True, mode="json", exclude_none=True)
        )
        return type(model).model_validate(data)

    async def _each(
        self, capability: str, fetch: Callable[[UpstreamConnection], Awaitable[list[_M]]]
    ) -> list[tuple[UpstreamConnection, _M]]:
        found: list[tuple[UpstreamConnection, _M]] = []
        for upstream in self._connected(capability):
            try:
                found.extend((upstream, item) for item in await fetch(upstream))
            except UpstreamError as exc:
                # One upstream down must not hide the others' listings.
                logger.warning("upstream %s: %s listing failed: %s", upstream.name, capability, exc)
        return found

    async def list_resources(self, principal: Principal) -> list[types.Resource]:
        """The resources ``principal`` is granted (refreshes the URI index)."""
        listed = await self._each("resources", lambda up: up.list_resources())
        index: dict[str, set[str]] = {}
        for upstream, resource in listed:
            index.setdefault(upstream.name, set()).add(resource.uri)
        self._uris = index
        return [
            self._scrub(res)
            for up, res in listed
            if self._granted(principal, f"resource:{up.name}:{res.uri}")
        ] + self._runbooks(principal)

    def _runbooks(self, principal: Principal) -> list[types.Resource]:
        """The runbooks (policy ``runbooks:``) this principal is granted, as ``runbook://<job>``."""
        return [
            types.Resource.model_validate(
                {
                    "uri": f"{RUNBOOK_SCHEME}{job}",
                    "name": f"runbook {job}",
                    "description": f"what the admins wrote about job `{job}`",
                    "mimeType": "text/plain",
                }
            )
            for job in sorted(self.gateway.policy.policy.runbooks)
            if self._granted(principal, f"resource:gateway:{RUNBOOK_SCHEME}{job}")
        ]

    async def list_resource_templates(self, principal: Principal) -> list[types.ResourceTemplate]:
        """The resource templates ``principal`` is granted (refreshes the template index)."""
        listed = await self._each("resources", lambda up: up.list_resource_templates())
        index: dict[str, dict[str, re.Pattern[str]]] = {}
        for upstream, template in listed:
            index.setdefault(upstream.name, {})[template.uri_template] = template_pattern(
                template.uri_template
            )
        self._templates = index
        return [
            self._scrub(t)
            for up, t in listed
            if self._granted(principal, f"resource:{up.name}:{t.uri_template}")
        ]

    async def list_prompts(self, principal: Principal) -> list[types.Prompt]:
        """The prompts ``principal`` is granted, named ``<upstream>.<prompt>``."""
        listed = await self._each("prompts", lambda up: up.list_prompts())
        return [
            self._scrub(prompt.model_copy(update={"name": f"{up.name}.{prompt.name}"}))
            for up, prompt in listed
            if self._granted(principal, f"prompt:{up.name}.{prompt.name}")
        ]

    def _owner(self, uri: str) -> str | None:
        for name in self.gateway.upstreams:
            if uri in self._uris.get(name, ()):
                return name
        for name in self.gateway.upstreams:
            if any(p.match(uri) for p in self._templates.get(name, {}).values()):
                return name
        return None

    async def _owner_of(self, principal: Principal, uri: str) -> str | None:
        owner = self._owner(uri)
        if owner is None:
            # Not seen yet (the agent read without listing, or the upstream added it): list once more.
            await self.list_resources(principal)
            await self.list_resource_templates(principal)
            owner = self._owner(uri)
        return owner

    async def read_resource(self, principal: Principal, uri: str) -> types.ReadResourceResult:
        """Read ``uri`` from the upstream that owns it, if granted; audited.

        Raises:
            ToolNotGranted: unknown or ungranted URI (after the denial is audited).
            AuditUnavailable: the intent or outcome could not be recorded.
            UpstreamError: the upstream failed (after the outcome is audited).
        """
        if uri.startswith(RUNBOOK_SCHEME):
            return await self._read_runbook(principal, uri)
        owner = await self._owner_of(principal, uri)
        key = f"resource:{owner or ''}:{uri}"
        refusal = ToolNotGranted(f"resource `{self._shown(uri)}` is not available")
        if owner is None or not self._granted(principal, key):
            raise await self._deny(principal, key, {"uri": uri}, refusal)
        upstream = self.gateway.upstreams[owner]
        return await self._governed(
            principal, key, {"uri": uri}, lambda: upstream.read_resource(uri), types.ReadResourceResult
        )

    async def _read_runbook(self, principal: Principal, uri: str) -> types.ReadResourceResult:
        """A runbook from the running policy, if granted (``resource:gateway:runbook://<job>``); audited."""
        key = f"resource:gateway:{uri}"
        text = self.gateway.policy.policy.runbooks.get(uri[len(RUNBOOK_SCHEME) :])
        if text is None or not self._granted(principal, key):
            refusal = ToolNotGranted(f"resource `{self._shown(uri)}` is not available")
            raise await self._deny(principal, key, {"uri": uri}, refusal)
        result = types.ReadResourceResult.model_validate(
            {"contents": [{"uri": uri, "mimeType": "text/plain", "text": text}]}
        )

        async def read() -> types.ReadResourceResult:
            return result

        return await self._governed(principal, key, {"uri": uri}, read, types.ReadResourceResult)

    async def get_prompt(
        self, principal: Principal, name: str, arguments: dict[str, str] | None
    ) -> types.GetPromptResult:
        """Get prompt ``<upstream>.<prompt>`` if granted; audited.

        Raises:
            ToolNotGranted: unknown or ungranted prompt (after the denial is audited).
            AuditUnavailable: the intent or outcome could not be recorded.
            UpstreamError: the upstream failed (after the outcome is audited).
        """
        upstream_name, _, prompt = name.partition(".")
        upstream = self.gateway.upstreams.get(upstream_name)
        key = f"prompt:{name}"
        args = {"name": name, "arguments": dict(arguments or {})}
        if upstream is None or not prompt or not self._granted(principal, key):
            raise await self._deny(
                principal, key, args, ToolNotGranted(f"prompt `{self._shown(name)}` is not available")
            )
        return await self._governed(
            principal, key, args, lambda: upstream.get_prompt(prompt, arguments), types.GetPromptResult
        )

    async def complete(
        self, principal: Principal, params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        """Forward ``completion/complete`` for a granted prompt or resource template.

        Raises:
            ToolNotGranted: the prompt or template is unknown or not granted (after the denial is audited).
            AuditUnavailable: the intent or outcome could not be recorded.
            UpstreamError: the upstream failed (after the outcome is audited).
        """
        ref = params.ref
        upstream: UpstreamConnection | None
        if isinstance(ref, types.PromptReference):
            upstream_name, _, prompt = ref.name.partition(".")
            upstream = self.gateway.upstreams.get(upstream_name)
            shown = f"prompt `{self._shown(ref.name)}`"
            key = f"completion:prompt:{ref.name}"
            granted = bool(prompt) and self._granted(principal, f"prompt:{ref.name}")
            forward: types.PromptReference | types.ResourceTemplateReference = types.PromptReference(
                name=prompt
            )
        else:
            owner = next((n for n, ts in self._templates.items() if ref.uri in ts), None)
            if owner is None:
                await self.list_resource_templates(principal)
                owner = next((n for n, ts in self._templates.items() if ref.uri in ts), None)
            upstream = self.gateway.upstreams.get(owner) if owner is not None else None
            shown = f"resource template `{self._shown(ref.uri)}`"
            key = f"completion:resource:{owner or ''}:{ref.uri}"
            granted = owner is not None and self._granted(principal, f"resource:{owner}:{ref.uri}")
            forward = ref
        context = params.context.arguments if params.context is not None else None
        argument = {"name": params.argument.name, "value": params.argument.value}
        if upstream is None or not granted:
            raise await self._deny(principal, key, argument, ToolNotGranted(f"{shown} is not available"))
        target = upstream
        return await self._governed(
            principal,
            key,
            argument,
            lambda: target.complete(forward, argument, context),
            types.CompleteResult,
        )

    def _shown(self, text: str) -> str:
        return self.gateway.secrets.redactor().scrub_text(text[:_MAX_SHOWN])

    async def _deny(
        self, principal: Principal, key: str, args: dict[str, Any], refusal: CallRefused
    ) -> CallRefused:
        redactor = self.gateway.secrets.redactor()
        safe_args, _ = redactor.scrub_json(args)
        event = AuditEvent(
            kind="denied",
            call_id=uuid.uuid4().hex,
            agent=principal.agent,
            tool=self._shown(key),
            decision="deny",
            status=refusal.kind,
            args=safe_args,
            detail={"rule_ids": [], "reasons": [str(refusal)], "token_id": principal.token_id},
        )
        try:
            await self.gateway.audit.append(event)
        except CallRefused:
            logger.error("audit unavailable while recording a denial of `%s`", event.tool)
        return refusal

    async def _governed(
        self,
        principal: Principal,
        key: str,
        args: dict[str, Any],
        send: Callable[[], Awaitable[_M]],
        model: type[_M],
    ) -> _M:
        try:
            # The tool path's argument limits (size, depth) hold here too; the arguments are not recorded.
            check_arguments(args, self.gateway.limits)
        except LimitExceeded as exc:
            raise await self._deny(
                principal, key, {"_omitted": "not recorded: refused by a limit"}, exc
            ) from None
        call_id = uuid.uuid4().hex
        redactor = self.gateway.secrets.redactor()
        safe_args, _ = redactor.scrub_json(args)
        shown = redactor.scrub_text(key)
        common: dict[str, Any] = {
            "call_id": call_id,
            "agent": principal.agent,
            "tool": shown,
            "decision": "allow",
        }
        # Durable before the upstream is touched: no audit, no act (AuditUnavailable propagates).
        await self.gateway.audit.append(
            AuditEvent(kind="intent", args=safe_args, detail={"token_id": principal.token_id}, **common)
        )
        started = time.perf_counter()
        try:
            raw = await send()
        except UpstreamError as exc:
            await self.gateway.audit.append(
                AuditEvent(kind="outcome", status="upstream_error", detail=self._latency(started), **common)
            )
            raise UpstreamError(redactor.scrub_text(str(exc))) from None
        # Taken after the answer: a secret written meanwhile is known to this redactor.
        scrubbed, redactions = self.gateway.secrets.redactor().scrub_json(
            raw.model_dump(by_alias=True, mode="json", exclude_none=True)
        )
        detail = self._latency(started) | {"result_digest": digest(scrubbed), "redactions": redactions}
        size = len(json.dumps(scrubbed, separators=(",", ":")).encode())
        limit = self.gateway.limits.max_result_bytes
        if size > limit:
            # A resource or prompt is one document: refused whole rather than cut somewhere inside.
            detail["result_bytes"] = size
            await self.gateway.audit.append(
                AuditEvent(kind="outcome", status="too_large", detail=detail, **common)
            )
            raise LimitExceeded(
                f"the answer is {size} bytes, above the limit of {limit} (limits.max_result_bytes)"
            )
        await self.gateway.audit.append(AuditEvent(kind="outcome", status="ok", detail=detail, **common))
        return model.model_validate(scrubbed)

    @staticmethod
    def _latency(started: float) -> dict[str, Any]:
        return {"latency_ms": round((time.perf_counter() - started) * 1000, 3)}
