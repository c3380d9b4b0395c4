"""Resource subscriptions (2025-11-25 ``resources/subscribe`` / ``resources/unsubscribe``), gated by policy.

Each request passes the governed skeleton as ``resource:<upstream>:<uri>``, the grant that lets the agent
read the resource (``federation.py``): deny by default, audited (intent and outcome, or ``denied``). An
unknown and an ungranted URI are refused alike, naming only what was asked for.

An upstream connection serves every agent, so the gateway subscribes upstream once per URI, when the
first session subscribes to it, and unsubscribes when the last one leaves: one agent's unsubscribe (or
ended session) never cancels another's subscription. The upstream's ``notifications/resources/updated``
goes only to the sessions subscribed to that URI of that upstream, and only while the policy still
allows them the resource (decided again at each delivery; a session that lost it is dropped). Each
delivery is audited in one compact record (kind ``notification``, the agent, the resource, the rule
ids), durable before the agent is told: no record, no delivery. A drop is recorded as a denial.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from mcp_gateway.core.exchange import MAX_SHOWN, Exchange, Granted, UnknownTarget
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.core.log_levels import EMPTY_RESULT, NoSession
from mcp_gateway.errors import AuditUnavailable, CallRefused, UpstreamError
from mcp_gateway.policy.evaluate import evaluate
from mcp_gateway.types import AuditEvent, Decision, Principal

logger = logging.getLogger(__name__)

UPDATED = "notifications/resources/updated"
OwnerOf = Callable[[Principal, str], Awaitable[str | None]]
"""Which upstream serves a URI (``Federation.owner_of``)."""


class UpdateSink(Protocol):
    """Where a session's resource updates go (the SDK's ``ServerSession`` of the subscribing request:
    its connection's standalone stream)."""

    async def send_resource_updated(self, uri: str) -> None: ...


class NotSubscribable(CallRefused):
    """The resource exists and is granted, but its upstream takes no subscriptions."""

    kind = "not_subscribable"


@dataclass(frozen=True, slots=True)
class Subscriber:
    principal: Principal
    sink: UpdateSink


class ResourceSubscriptions:
    """Which sessions watch which upstream resource, for one gateway; the upstreams report updates here.

    Args:
        gateway: the policy, the governed skeleton and the upstream connections.
        owner_of: finds the upstream serving a URI.
    """

    def __init__(self, gateway: Gateway, owner_of: OwnerOf) -> None:
        self._gateway = gateway
        self._owner_of = owner_of
        self._watchers: dict[tuple[str, str], dict[str, Subscriber]] = {}
        # Serializes the first-in / last-out transitions, so a URI is subscribed upstream exactly
        # while some session watches it.
        self._lock = anyio.Lock()
        for upstream in gateway.upstreams.values():
            upstream.on_resource_updated = self.updated

    def watching(self, upstream: str, uri: str) -> frozenset[str]:
        """The sessions subscribed to ``uri`` of ``upstream``."""
        return frozenset(self._watchers.get((upstream, uri), ()))

    async def subscribe(self, principal: Principal, uri: str, session: str | None, sink: UpdateSink) -> None:
        """Subscribe ``session`` to ``uri`` through the governed skeleton.

        Raises:
            ToolNotGranted: unknown or ungranted URI (after the denial is audited).
            CallRefused: no session, an upstream without subscriptions, a constraint, limit or quota
                (audited).
            AuditUnavailable: the intent or outcome could not be recorded.
            UpstreamError: the upstream refused or failed (after the outcome is audited).
        """
        owner = await self._owner_of(principal, uri)
        upstream = self._gateway.upstreams.get(owner) if owner is not None else None

        def admit() -> None:
            if upstream is not None and not upstream.subscribable:
                raise NotSubscribable(f"upstream `{upstream.name}` takes no resource subscriptions")

        async def act(_: Granted) -> tuple[dict[str, Any], str]:
            assert upstream is not None and session is not None  # noqa: S101 - prepare refused otherwise
            await self._add(upstream.name, uri, session, Subscriber(principal, sink))
            return {}, "ok"

        await self._run("resources/subscribe", principal, uri, owner, session, act, admit)

    async def unsubscribe(self, principal: Principal, uri: str, session: str | None) -> None:
        """End ``session``'s subscription to ``uri`` through the governed skeleton (a URI the session
        did not subscribe to is answered as done).

        Raises:
            ToolNotGranted: unknown or ungranted URI (after the denial is audited).
            CallRefused: no session, a constraint, limit or quota (audited).
            AuditUnavailable: the intent or outcome could not be recorded.
        """
        owner = next((up for (up, u), ws in self._watchers.items() if u == uri and session in ws), None)
        if owner is None:
            owner = await self._owner_of(principal, uri)

        async def act(_: Granted) -> tuple[dict[str, Any], str]:
            assert owner is not None and session is not None  # noqa: S101 - prepare refused otherwise
            async with self._lock:
                await self._drop(owner, uri, session)
            return {}, "ok"

        await self._run("resources/unsubscribe", principal, uri, owner, session, act, None)

    async def forget(self, session: str) -> None:
        """Drop every subscription of a session that ended."""
        async with self._lock:
            for upstream, uri in [key for key, ws in self._watchers.items() if session in ws]:
                await self._drop(upstream, uri, session)

    async def updated(self, upstream: str, uri: str) -> None:
        """Tell every session subscribed to ``uri`` of ``upstream`` that it changed, while the policy
        still allows it the resource; drop the others."""
        key = f"resource:{upstream}:{uri}"
        shown = self._gateway.secrets.redactor().scrub_text(key[:MAX_SHOWN])
        gone: list[str] = []
        for session, subscriber in list(self._watchers.get((upstream, uri), {}).items()):
            principal = subscriber.principal
            scopes = principal.scopes if principal.source == "oauth" else None
            decision = evaluate(
                self._gateway.policy.policy, principal.agent, key, {"uri": uri}, scopes=scopes
            )
            if not decision.allowed:
                logger.info(
                    "agent %s no longer may watch a resource of %s: dropped", principal.agent, upstream
                )
                gone.append(session)
                await self._record(principal, shown, decision, "dropped")
                continue
            if not await self._record(principal, shown, decision, "ok"):
                continue  # no record, no delivery
            try:
                await subscriber.sink.send_resource_updated(uri)
            except Exception as exc:  # the session went away under us
                logger.info("agent %s: resource update not delivered (%s): dropped", principal.agent, exc)
                gone.append(session)
                await self._record(principal, shown, decision, "undelivered")
        if gone:
            async with self._lock:
                for session in gone:
                    await self._drop(upstream, uri, session)

    async def _record(self, principal: Principal, shown: str, decision: Decision, status: str) -> bool:
        """Audit one delivery (or drop) of an update; False when the record could not be made durable."""
        event = AuditEvent(
            kind="notification",
            agent=principal.agent,
            tool=shown,
            decision="allow" if decision.allowed else "deny",
            status=status,
            detail={"method": UPDATED, "rule_ids": list(decision.rule_ids), "token_id": principal.token_id},
        )
        try:
            await self._gateway.audit.append(event)
        except AuditUnavailable as exc:
            logger.error("agent %s: resource update not delivered: %s", principal.agent, exc)
            return False
        return True

    async def _run(
        self,
        method: str,
        principal: Principal,
        uri: str,
        owner: str | None,
        session: str | None,
        act: Callable[[Granted], Awaitable[tuple[dict[str, Any], str]]],
        admit: Callable[[], None] | None,
    ) -> None:
        gateway = self._gateway
        exchange = Exchange(
            principal,
            method,
            f"resource:{owner or ''}:{uri}",
            {"uri": uri},
            "resource",
            where=f"upstream `{owner}`",
            label=uri,
        )

        def prepare(_: Exchange) -> None:
            if owner is None or owner not in gateway.upstreams:
                raise UnknownTarget()
            if admit is not None:
                admit()
            if session is None:
                raise NoSession(f"{method} applies to a session, and this request has none")

        await gateway.governor.run(exchange, act, EMPTY_RESULT, prepare=prepare)

    async def _add(self, upstream: str, uri: str, session: str, subscriber: Subscriber) -> None:
        async with self._lock:
            watchers = self._watchers.get((upstream, uri))
            if not watchers:
                # The first watcher: subscribe upstream (an UpstreamError leaves nothing recorded).
                await self._gateway.upstreams[upstream].subscribe_resource(uri)
                watchers = self._watchers.setdefault((upstream, uri), {})
            watchers[session] = subscriber

    async def _drop(self, upstream: str, uri: str, session: str) -> None:
        """Remove one watcher (the lock held); the last one out unsubscribes upstream."""
        watchers = self._watchers.get((upstream, uri))
        if watchers is None or watchers.pop(session, None) is None:
            return
        if watchers:
            return
        del self._watchers[(upstream, uri)]
        connection = self._gateway.upstreams.get(upstream)
        if connection is None:
            return
        try:
            await connection.unsubscribe_resource(uri)
        except UpstreamError as exc:
            # Nobody here watches it any more: an update that still arrives goes to no one.
            logger.info("upstream %s: unsubscribing a resource failed: %s", upstream, exc)
