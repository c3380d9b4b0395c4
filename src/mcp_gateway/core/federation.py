"""Federation of upstream resources, resource templates, prompts and completions, gated by policy.

Deny by default, as for tools:

- an upstream's prompt ``P`` is offered as ``<upstream>.P`` and only to agents granted
  ``prompt:<upstream>.P``;
- a resource with URI ``U`` is listed and readable only by agents granted ``resource:<upstream>:U``
  (a template ``T`` and completions against it need ``resource:<upstream>:T``).

URIs are not renamed; the gateway keeps, per upstream, the URIs and templates its listings returned,
so it knows which upstream owns a URI (a URI no upstream listed and no template matches is unknown).
An unknown and an ungranted name or URI are refused alike, naming only what was asked for.

Subscriptions to resources (``subscriptions.py``) need the grant a read needs.

Every ``resources/read`` and ``prompts/get`` is audited like a tool call: a durable intent before the
upstream is touched (none, no act), a durable outcome after; denials are audited before the refusal.
Everything an upstream says passes through the redactor before it reaches the agent.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import mcp_types as types
from pydantic import BaseModel

from mcp_gateway.connectors.mcp.upstream import UpstreamConnection
from mcp_gateway.core.exchange import Exchange, Granted, ResultRule, UnknownTarget
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.core.request_state import Resume
from mcp_gateway.core.rounds import is_input_required, pass_on
from mcp_gateway.core.subscriptions import ResourceSubscriptions
from mcp_gateway.errors import UpstreamError
from mcp_gateway.pins.events import template_pattern
from mcp_gateway.policy.evaluate import is_granted
from mcp_gateway.types import Principal

logger = logging.getLogger(__name__)

_M = TypeVar("_M", bound=BaseModel)
_R = TypeVar("_R")


RUNBOOK_SCHEME = "runbook://"
"""Runbooks from policy are resources of the gateway itself: ``runbook://<job>``."""
INCIDENT_SCHEME = "incident://"
"""So are the quality monitors' incidents: ``incident://<id>`` (the newest ``INCIDENTS_LISTED`` listed)."""
INCIDENTS_LISTED = 50


class Federation:
    """Lists, reads and completes upstream resources and prompts for one gateway, under its policy."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._uris: dict[str, set[str]] = {}
        self._templates: dict[str, dict[str, re.Pattern[str]]] = {}
        self.subscriptions = ResourceSubscriptions(gateway, self.owner_of)
        """``resources/subscribe`` and ``resources/unsubscribe``, under the same grants as reads."""

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
        return (
            [
                self._scrub(res)
                for up, res in listed
                if self._granted(principal, f"resource:{up.name}:{res.uri}")
            ]
            + self._runbooks(principal)
            + await self._incidents(principal)
        )

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

    async def _incidents(self, principal: Principal) -> list[types.Resource]:
        """The newest incidents this principal is granted, as ``incident://<id>``."""
        store = self.gateway.incidents
        if store is None:
            return []
        found = await anyio.to_thread.run_sync(lambda: store.history(limit=INCIDENTS_LISTED))
        return [
            types.Resource.model_validate(
                {
                    "uri": incident.uri,
                    "name": f"incident {incident.id}",
                    "description": f"{incident.status}: monitor `{incident.monitor}` on `{incident.table}`",
                    "mimeType": "application/json",
                }
            )
            for incident in found
            if self._granted(principal, f"resource:gateway:{incident.uri}")
        ]

    async def _incident_text(self, uri: str) -> str | None:
        store = self.gateway.incidents
        if store is None:
            return None
        incident = await anyio.to_thread.run_sync(lambda: store.get(uri[len(INCIDENT_SCHEME) :]))
        return None if incident is None else json.dumps(incident.as_dict(), default=str)

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
            self._scrub(prompt.model_copy(update={"name": f"{up.prefix}{prompt.name}"}))
            for up, prompt in listed
            if self._granted(principal, f"prompt:{up.prefix}{prompt.name}")
        ]

    def _owner(self, uri: str) -> str | None:
        for name in self.gateway.upstreams:
            if uri in self._uris.get(name, ()):
                return name
        for name in self.gateway.upstreams:
            if any(p.match(uri) for p in self._templates.get(name, {}).values()):
                return name
        return None

    async def owner_of(self, principal: Principal, uri: str) -> str | None:
        """The upstream serving ``uri`` (listed by it, or matching one of its templates), else None."""
        owner = self._owner(uri)
        if owner is None:
            # Not seen yet (the agent read without listing, or the upstream added it): list once more.
            await self.list_resources(principal)
            await self.list_resource_templates(principal)
            owner = self._owner(uri)
        return owner

    async def read_resource(
        self, principal: Principal, uri: str, resume: Resume | None = None
    ) -> types.ReadResourceResult | types.InputRequiredResult:
        """Read ``uri`` from the upstream that owns it (or a runbook or incident of the gateway), through
        the governed skeleton; ``resume`` carries a 2026-07-28 retry (``rounds.py``).

        Raises:
            ToolNotGranted: unknown or ungranted URI (after the denial is audited).
            CallRefused: a constraint, limit, approval or quota refused it (audited).
            AuditUnavailable: the intent or outcome could not be recorded.
            UpstreamError: the upstream failed (after the outcome is audited).
        """
        if uri.startswith((RUNBOOK_SCHEME, INCIDENT_SCHEME)):
            if uri.startswith(RUNBOOK_SCHEME):
                text = self.gateway.policy.policy.runbooks.get(uri[len(RUNBOOK_SCHEME) :])
                mime = "text/plain"
            else:
                text, mime = await self._incident_text(uri), "application/json"
            exchange = Exchange(
                principal, "resources/read", f"resource:gateway:{uri}", {"uri": uri}, "resource", label=uri
            )

            async def runbook(_: Forward) -> BaseModel:
                contents = [{"uri": uri, "mimeType": mime, "text": text}]
                return types.ReadResourceResult.model_validate({"contents": contents})

            return await self._run(exchange, None, runbook, DOCUMENT_RESULT[0], text is not None, None)
        owner = await self.owner_of(principal, uri)
        upstream = self.gateway.upstreams.get(owner) if owner is not None else None
        target = f"resource:{owner or ''}:{uri}"
        exchange = Exchange(
            principal,
            "resources/read",
            target,
            {"uri": uri},
            "resource",
            where=f"upstream `{owner}`",
            label=uri,
        )

        async def read(up: Forward) -> BaseModel:
            return await up.connection.read_resource(
                uri, input_responses=up.responses, request_state=up.state
            )

        return await self._run(exchange, upstream, read, DOCUMENT_RESULT[0], upstream is not None, resume)

    async def get_prompt(
        self, principal: Principal, name: str, arguments: dict[str, str] | None, resume: Resume | None = None
    ) -> types.GetPromptResult | types.InputRequiredResult:
        """Get prompt ``<upstream>.<prompt>`` through the governed skeleton; ``resume`` as for resources.

        Raises:
            ToolNotGranted: unknown or ungranted prompt (after the denial is audited).
            CallRefused: a constraint, limit, approval or quota refused it (audited).
            AuditUnavailable: the intent or outcome could not be recorded.
            UpstreamError: the upstream failed (after the outcome is audited).
        """
        upstream, prompt = self._prompt_owner(name)
        args = {"name": name, "arguments": dict(arguments or {})}
        where = f"upstream `{upstream.name if upstream is not None else ''}`"
        exchange = Exchange(
            principal, "prompts/get", f"prompt:{name}", args, "prompt", where=where, label=name
        )

        async def get(up: Forward) -> BaseModel:
            return await up.connection.get_prompt(
                prompt, arguments, input_responses=up.responses, request_state=up.state
            )

        return await self._run(exchange, upstream, get, DOCUMENT_RESULT[1], upstream is not None, resume)

    async def complete(
        self, principal: Principal, params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        """Forward ``completion/complete`` for a granted prompt or resource template, governed by the
        grant of that prompt or template.

        Raises:
            ToolNotGranted: the prompt or template is unknown or not granted (after the denial is audited).
            CallRefused: a constraint, limit, approval or quota refused it (audited).
            AuditUnavailable: the intent or outcome could not be recorded.
            UpstreamError: the upstream failed (after the outcome is audited).
        """
        ref = params.ref
        upstream: UpstreamConnection | None
        forward: types.PromptReference | types.ResourceTemplateReference
        if isinstance(ref, types.PromptReference):
            upstream, prompt = self._prompt_owner(ref.name)
            grant, noun, shown = f"prompt:{ref.name}", "prompt", ref.name
            forward = types.PromptReference(name=prompt)
        else:
            owner = next((n for n, ts in self._templates.items() if ref.uri in ts), None)
            if owner is None:
                await self.list_resource_templates(principal)
                owner = next((n for n, ts in self._templates.items() if ref.uri in ts), None)
            upstream = self.gateway.upstreams.get(owner) if owner is not None else None
            grant, noun, shown = f"resource:{owner or ''}:{ref.uri}", "resource template", ref.uri
            forward = ref
        context = params.context.arguments if params.context is not None else None
        argument = {"name": params.argument.name, "value": params.argument.value}
        exchange = Exchange(
            principal, "completion/complete", f"completion:{grant}", argument, noun, label=shown, grant=grant
        )

        async def complete(up: Forward) -> BaseModel:
            return await up.connection.complete(forward, argument, context)

        answer = await self._run(exchange, upstream, complete, COMPLETION_RESULT, upstream is not None, None)
        if isinstance(answer, types.InputRequiredResult):  # not a method that may ask for input
            raise UpstreamError(
                f"upstream `{upstream.name if upstream else ''}` asked for input on a completion"
            )
        return answer

    def _prompt_owner(self, name: str) -> tuple[UpstreamConnection | None, str]:
        """The upstream offering prompt ``name`` (by its prefix) and the prompt's own name there."""
        upstream = self.gateway.upstream_of(name)
        prompt = name[len(upstream.prefix) :] if upstream is not None else ""
        return (upstream, prompt) if prompt else (None, "")

    async def _run(
        self,
        exchange: Exchange,
        upstream: UpstreamConnection | None,
        send: Callable[[Forward], Awaitable[BaseModel]],
        rule: ResultRule[_M],
        known: bool,
        resume: Resume | None,
    ) -> _M | types.InputRequiredResult:
        """``exchange`` through the skeleton: ``known`` False is refused as an ungranted one is, naming
        only what was asked for; an upstream's ``input_required`` round goes back sealed (``rounds.py``)."""
        gateway = self.gateway
        opened: list[str | None] = []

        async def prepare(_: Exchange) -> None:
            if not known:
                raise UnknownTarget()
            if resume is not None and resume.request_state is not None:
                opened.append(await gateway.states.open(resume.request_state, *_bound(exchange)))

        async def act(_: Granted) -> tuple[dict[str, Any], str]:
            responses = resume.input_responses if resume is not None else None
            answer = _dump(await send(Forward(upstream, responses, opened[0] if opened else None)))
            if upstream is not None and is_input_required(answer):
                allowed = upstream.config.relay_requests
                return pass_on(
                    answer, exchange, upstream=upstream.name, relay_requests=allowed, states=gateway.states
                )
            return answer, "ok"

        return await gateway.governor.run(exchange, act, rule, prepare=prepare)


@dataclass(frozen=True, slots=True)
class Forward:
    """What an act sends its upstream: the connection and, on a retry, the agent's answers and the
    upstream's own state (unsealed from the gateway's)."""

    upstream: UpstreamConnection | None
    responses: Mapping[str, Any] | None
    state: str | None

    @property
    def connection(self) -> UpstreamConnection:
        if self.upstream is None:  # prepare refused the exchange before anything acts
            raise UpstreamError("no upstream serves this")
        return self.upstream


def _bound(exchange: Exchange) -> tuple[Principal, str, str, Mapping[str, Any]]:
    return exchange.principal, exchange.method, exchange.target, exchange.arguments


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


DOCUMENT_RESULT = (ResultRule(types.ReadResourceResult), ResultRule(types.GetPromptResult))
"""A resource or a prompt is one document: an oversized one is refused whole, a failure is an error."""
COMPLETION_RESULT = ResultRule(types.CompleteResult)
