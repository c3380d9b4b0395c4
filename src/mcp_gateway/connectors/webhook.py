"""A Slack-compatible incoming webhook the gateway tells people through (approvals, alerts, incidents).

A message is a courtesy, never part of a decision: ``post`` never raises, is bounded in time (one
attempt and at most one retry, each with a timeout), and a failure is only logged. To keep even that
wait off the call path, ``submit`` queues a message and returns at once, and ``run`` (started once in
the server's task group) sends the queue in the background.

Webhook URLs are credentials (the path is the secret), so the URL may be a ``secret://NAME``
reference resolved from the vault at send time, and logs name only its scheme and host. The URL is
checked by the SSRF guard (``netguard``) before each send unless ``allow_private_network`` is set,
and the POST goes out through ``netguard.GuardedTransport``, which connects only to an address it
checked (a webhook host that answers DNS differently the second time reaches nothing inward). Callers
escape text an agent influences (``slack_escape``) so it cannot ping ``@channel`` or smuggle links.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from mcp_gateway.connectors.netguard import BlockedAddress, GuardedTransport, check_upstream_url
from mcp_gateway.errors import GatewayError
from mcp_gateway.types import SECRET_REF, SecretValue

logger = logging.getLogger(__name__)

UrlCheck = Callable[..., Awaitable[None]]


def slack_escape(text: str) -> str:
    """Escape Slack's control characters so text shows as typed (no mentions, links or markup)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def safe_url(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what may be logged of a webhook URL."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a malformed port: still name the host, nothing more
        port = None
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


class Webhook:
    """Posts JSON messages to one webhook (see the module docstring).

    Args:
        url: ``https://...`` or ``secret://NAME`` (resolved through ``resolve_secret`` per send).
        what: what the messages are about, for logs (``approval``, ``alert``, ``incident``).
        resolve_secret: vault lookup by secret name; needed only for a ``secret://`` URL.
        allow_private_network: skip the SSRF guard (for a webhook relay on a private network).
        timeout_seconds: per attempt (connect, read, write and pool each).
        transport: an httpx transport (tests inject ``httpx.MockTransport``); None: the network,
            through ``GuardedTransport`` (resolved once, checked, connected to the checked address).
        check_url: the SSRF guard (``netguard.check_upstream_url``).
        queue_size: the most messages ``submit`` holds for ``run``; more are dropped (and logged).
    """

    def __init__(
        self,
        url: str,
        *,
        what: str,
        resolve_secret: Callable[[str], SecretValue] | None = None,
        allow_private_network: bool = False,
        timeout_seconds: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        check_url: UrlCheck = check_upstream_url,
        queue_size: int = 100,
    ) -> None:
        self._url = url
        self._what = what
        self._resolve_secret = resolve_secret
        self._allow_private = allow_private_network
        self._timeout = timeout_seconds
        self._transport = transport
        self._check_url = check_url
        self._queue: deque[tuple[str, Mapping[str, Any]]] = deque()
        self._queue_size = queue_size
        self._wake: anyio.Event | None = None
        self.sent = 0
        """Messages the webhook accepted."""

    def __repr__(self) -> str:
        return f"Webhook(<{self._what} webhook>)"

    def submit(self, label: str, body: Mapping[str, Any]) -> bool:
        """Queue ``body`` (about ``label``, e.g. an approval id) for ``run`` and return at once (call
        it from the event loop's thread). Returns False, logged, when the queue is full."""
        if len(self._queue) >= self._queue_size:
            logger.warning("%s %s: notification queue full; notification dropped", self._what, label)
            return False
        self._queue.append((label, body))
        if self._wake is not None:
            self._wake.set()
        return True

    async def run(self) -> None:
        """Send what ``submit`` queues, one at a time, until cancelled (start it in a task group)."""
        while True:
            while self._queue:
                await self.post(*self._queue.popleft())
            # No await between the check above and this: a submit in between cannot be missed.
            self._wake = anyio.Event()
            await self._wake.wait()

    async def post(self, label: str, body: Mapping[str, Any]) -> bool:
        """Send ``body`` now; True when the webhook accepted it. Never raises; failures are logged
        with ``label`` and the webhook's host only."""
        # Twice the per-attempt timeout, plus DNS for the guard: the most one message can take.
        with anyio.move_on_after(2 * self._timeout + 5):
            try:
                ok = await self._send(label, body)
            except Exception as exc:  # a notification must never fail the caller
                logger.warning(
                    "%s %s: notification failed unexpectedly (%s)", self._what, label, type(exc).__name__
                )
                return False
            self.sent += ok
            return ok
        logger.warning("%s %s: notification timed out", self._what, label)
        return False

    async def _send(self, label: str, body: Mapping[str, Any]) -> bool:
        url = self._resolved_url(label)
        if url is None:
            return False
        where = safe_url(url)
        if urlsplit(url).scheme not in ("http", "https"):
            logger.warning("%s %s: webhook URL is not http(s); notification skipped", self._what, label)
            return False
        try:
            await self._check_url(url, allow_private_network=self._allow_private)
        except GatewayError as exc:
            logger.warning(
                "%s %s: webhook %s refused by the network guard: %s", self._what, label, where, exc
            )
            return False
        transport = self._transport or GuardedTransport(allow_private_network=self._allow_private)
        problem = ""
        async with httpx.AsyncClient(
            timeout=self._timeout, transport=transport, follow_redirects=False
        ) as client:
            for attempt in (1, 2):
                try:
                    response = await client.post(url, json=dict(body))
                except BlockedAddress as exc:
                    # The host answered DNS differently than for the check above: not retried.
                    logger.warning(
                        "%s %s: webhook %s refused by the network guard: %s", self._what, label, where, exc
                    )
                    return False
                except httpx.HTTPError as exc:
                    # httpx messages can quote the URL (its secret path); name the error class only.
                    problem = type(exc).__name__
                else:
                    if response.is_success:
                        return True
                    problem = f"HTTP {response.status_code}"
                    if response.status_code < 500 and response.status_code != 429:
                        break  # the webhook refused this message: sending it again will not help
                logger.warning(
                    "%s %s: webhook %s failed (%s), attempt %d of 2",
                    self._what,
                    label,
                    where,
                    problem,
                    attempt,
                )
        logger.warning(
            "%s %s: webhook %s did not accept the notification (%s)", self._what, label, where, problem
        )
        return False

    def _resolved_url(self, label: str) -> str | None:
        match = SECRET_REF.fullmatch(self._url)
        if match is None:
            return self._url
        name = match.group(1)
        if self._resolve_secret is None:
            logger.warning("%s %s: webhook secret `%s` cannot be resolved here", self._what, label, name)
            return None
        try:
            return self._resolve_secret(name).reveal_text().strip()
        except GatewayError as exc:
            # Vault errors name the secret, never its value.
            logger.warning("%s %s: webhook secret unavailable: %s", self._what, label, exc)
            return None
