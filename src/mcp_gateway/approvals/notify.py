"""Tell approvers a request is waiting: a Slack-compatible incoming-webhook POST.

The body is ``{"text": ..., "blocks": [...]}`` (Slack's Block Kit; Mattermost and others accept the
same). Sending (queued, bounded, never raising, the URL a credential checked by the SSRF guard) is
``connectors/webhook.py``'s; this module writes the message, escaping text an agent influences
(arguments, reason) so it cannot ping ``@channel`` or smuggle links into it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import httpx

from mcp_gateway.approvals.model import APPROVAL_ARG, Approval
from mcp_gateway.connectors.netguard import check_upstream_url
from mcp_gateway.connectors.webhook import UrlCheck, Webhook, safe_url, slack_escape
from mcp_gateway.types import SecretValue

__all__ = ["ApprovalNotifier", "approval_message", "safe_url", "slack_escape"]

_SECTION_MAX = 2900  # Slack refuses section text over 3,000 characters


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


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
    """Announces each new approval request on a webhook (``Webhook``'s arguments, but ``what``).

    ``submit`` queues an approval and returns at once; ``run`` sends the queue; ``notify`` sends one
    now and says whether the webhook accepted it. None of them raises.
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
        self.webhook = Webhook(
            webhook_url,
            what="approval",
            resolve_secret=resolve_secret,
            allow_private_network=allow_private_network,
            timeout_seconds=timeout_seconds,
            transport=transport,
            check_url=check_url,
            queue_size=queue_size,
        )

    def __repr__(self) -> str:
        return "ApprovalNotifier(<webhook>)"

    def submit(self, approval: Approval) -> bool:
        """Queue ``approval`` for ``run`` and return at once (call it from the event loop's thread).

        Returns False, logged, when the queue is full (approvers still find it with the CLI or API).
        """
        return self.webhook.submit(approval.id, approval_message(approval))

    async def run(self) -> None:
        """Send what ``submit`` queues until cancelled (start it in a task group)."""
        await self.webhook.run()

    async def notify(self, approval: Approval) -> bool:
        """Announce ``approval`` now; True when the webhook accepted it. Never raises."""
        return await self.webhook.post(approval.id, approval_message(approval))
