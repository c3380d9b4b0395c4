"""Tell approvers a request is waiting: a Slack-compatible incoming-webhook POST.

The body is ``{"text": ..., "blocks": [...]}`` (Slack's Block Kit; Mattermost and others accept the
same). A notification is a courtesy, never part of the decision: ``notify`` never raises, is bounded
in time (one attempt and at most one retry, each with a timeout), and a failure is only logged.
To keep even that wait off the call path, ``submit`` queues the approval and returns at once, and
``run`` (started once in the server's task group) sends the queue in the background.

Webhook URLs are credentials (the path is the secret), so the URL may be a ``secret://NAME``
reference resolved from the vault at send time, and logs name only its scheme and host. The URL is
checked by the SSRF guard (``netguard``) before each send unless ``allow_private_network`` is set,
and the POST goes out through ``netguard.GuardedTransport``, which connects only to an address it
checked (a webhook host that answers DNS differently the second time reaches nothing inward).
Text that an agent influences (arguments, reason) is escaped, so it cannot ping ``@channel`` or
smuggle links into the message.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from mcp_gateway.approvals.model import APPROVAL_ARG, Approval
from mcp_gateway.connectors.netguard import BlockedAddress, GuardedTransport, check_upstream_url
from mcp_gateway.errors import GatewayError
from mcp_gateway.types import SECRET_REF, SecretValue

logger = logging.getLogger(__name__)

_SECTION_MAX = 2900  # Slack refuses section text over 3,000 characters
UrlCheck = Callable[..., Awaitable[None]]


def slack_escape(text: str) -> str:
    """Escape Slack's control characters so text shows as typed (no mentions, links or markup)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def safe_url(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what may be logged of a webhook URL."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a malformed port: still name the host, nothing more
        port = None
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{port}" if port else "")


def approval_message(approval: Approval) -> dict[str, Any]:
    """The Slack-compatible body announcing a pending ``approval``."""
    agent, tool = slack_escape(approval.agent), slack_escape(approval.tool)
    reason = slack_escape(approval.reason or "approval required")
    args = json.dumps(dict(approval.args), ensure_ascii=False, sort_keys=True, indent=1, default=str)
    args = slack_escape(_clip(args, _SECTION_MAX - 20)).replace("```", "'''")
    text = f"Approval needed: agent {agent} wants to run {tool}: {reason} (approval {approval.id})"
    return {
        "text": _clip(text, _SECTION_MAX),
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _clip(f"*Approval needed*: {reason}", _SECTION_MAX)},
                "fields": [
                    {"type": "mrkdwn", "text": f"*Agent*\n{_clip(agent, 500)}"},
                    {"type": "mrkdwn", "text": f"*Tool*\n{_clip(tool, 500)}"},
                    {"type": "mrkdwn", "text": f"*Approval*\n{approval.id}"},
                    {"type": "mrkdwn", "text": f"*Expires*\n{_iso(approval.expires_at)}"},
                ],
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Arguments*\n```{args}```"}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"Approve: `mcp-gateway approvals approve {approval.id}`  ·  "
                        f"Deny: `mcp-gateway approvals deny {approval.id}`  ·  the agent then repeats"
                        f" the call with `{APPROVAL_ARG}`",
                    }
                ],
            },
        ],
    }


class ApprovalNotifier:
    """POSTs a message about each new approval request to a webhook.

    Args:
        webhook_url: ``https://...`` or ``secret://NAME`` (resolved through ``resolve_secret`` per send).
        resolve_secret: vault lookup by secret name; needed only for a ``secret://`` URL.
        allow_private_network: skip the SSRF guard (for a webhook relay on a private network).
        timeout_seconds: per attempt (connect, read, write and pool each).
        transport: an httpx transport (tests inject ``httpx.MockTransport``); None: the network,
            through ``GuardedTransport`` (resolved once, checked, connected to the checked address).
        check_url: the SSRF guard (``netguard.check_upstream_url``).
        queue_size: the most approvals ``submit`` holds for ``run``; more are dropped (and logged).
    """

    def __init__(
        self,
        webhook_url: str,
        *,
        resolve_secret: Callable[[str], SecretValue] | None = None,
        allow_private_network: bool = False,
        timeout_seconds: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        check_url: UrlCheck = check_upstream_url,
        queue_size: int = 100,
    ) -> None:
        self._url = webhook_url
        self._resolve_secret = resolve_secret
        self._allow_private = allow_private_network
        self._timeout = timeout_seconds
        self._transport = transport
        self._check_url = check_url
        self._queue: deque[Approval] = deque()
        self._queue_size = queue_size
        self._wake: anyio.Event | None = None

    def __repr__(self) -> str:
        return "ApprovalNotifier(<webhook>)"

    def submit(self, approval: Approval) -> bool:
        """Queue ``approval`` for ``run`` and return at once (call it from the event loop's thread).

        Returns False, logged, when the queue is full (approvers still find it with the CLI or API).
        """
        if len(self._queue) >= self._queue_size:
            logger.warning("approval %s: notification queue full; notification dropped", approval.id)
            return False
        self._queue.append(approval)
        if self._wake is not None:
            self._wake.set()
        return True

    async def run(self) -> None:
        """Send what ``submit`` queues, one at a time, until cancelled (start it in a task group)."""
        while True:
            while self._queue:
                await self.notify(self._queue.popleft())
            # No await between the check above and this: a submit in between cannot be missed.
            self._wake = anyio.Event()
            await self._wake.wait()

    async def notify(self, approval: Approval) -> bool:
        """Announce ``approval``; True when the webhook accepted it. Never raises; failures are logged
        with the approval id and the webhook's host only."""
        # Twice the per-attempt timeout, plus DNS for the guard: the most one notification can take.
        with anyio.move_on_after(2 * self._timeout + 5):
            try:
                return await self._send(approval)
            except Exception as exc:  # a notification must never fail the call path
                logger.warning(
                    "approval %s: notification failed unexpectedly (%s)", approval.id, type(exc).__name__
                )
                return False
        logger.warning("approval %s: notification timed out", approval.id)
        return False

    async def _send(self, approval: Approval) -> bool:
        url = self._webhook_url(approval.id)
        if url is None:
            return False
        where = safe_url(url)
        if urlsplit(url).scheme not in ("http", "https"):
            logger.warning("approval %s: webhook URL is not http(s); notification skipped", approval.id)
            return False
        try:
            await self._check_url(url, allow_private_network=self._allow_private)
        except GatewayError as exc:
            logger.warning(
                "approval %s: webhook %s refused by the network guard: %s", approval.id, where, exc
            )
            return False
        body = approval_message(approval)
        transport = self._transport or GuardedTransport(allow_private_network=self._allow_private)
        async with httpx.AsyncClient(
            timeout=self._timeout, transport=transport, follow_redirects=False
        ) as client:
            for attempt in (1, 2):
                try:
                    response = await client.post(url, json=body)
                except BlockedAddress as exc:
                    # The host answered DNS differently than for the check above: not retried.
                    logger.warning(
                        "approval %s: webhook %s refused by the network guard: %s", approval.id, where, exc
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
                    "approval %s: webhook %s failed (%s), attempt %d of 2",
                    approval.id,
                    where,
                    problem,
                    attempt,
                )
        logger.warning(
            "approval %s: webhook %s did not accept the notification (%s)", approval.id, where, problem
        )
        return False

    def _webhook_url(self, approval_id: str) -> str | None:
        match = SECRET_REF.fullmatch(self._url)
        if match is None:
            return self._url
        name = match.group(1)
        if self._resolve_secret is None:
            logger.warning("approval %s: webhook secret `%s` cannot be resolved here", approval_id, name)
            return None
        try:
            return self._resolve_secret(name).reveal_text().strip()
        except GatewayError as exc:
            # Vault errors name the secret, never its value.
            logger.warning("approval %s: webhook secret unavailable: %s", approval_id, exc)
            return None
