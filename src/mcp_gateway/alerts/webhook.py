"""Send alerts to a Slack-compatible incoming webhook: ``{"text": ...}`` (Mattermost, Teams
workflows and most chat relays accept the same body).

Sending is ``connectors/webhook.py``'s, as for approval notifications: the URL may be a
``secret://NAME`` reference resolved per send, logs name only its scheme and host, the SSRF guard
checks it and the POST connects only to the address it checked, and a send is bounded (one retry)
and never raises. This module writes the message, escaped so an agent-chosen name cannot ping
``@channel`` or add links.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from mcp_gateway.alerts.board import Alert
from mcp_gateway.connectors.webhook import Webhook, slack_escape
from mcp_gateway.types import SecretValue

_TEXT_MAX = 2900
_ICON = {
    "low": ":information_source:",
    "medium": ":warning:",
    "high": ":rotating_light:",
    "critical": ":rotating_light:",
}


def alert_message(alert: Alert) -> dict[str, Any]:
    """The Slack-compatible body of ``alert``."""
    text = (
        f"{_ICON.get(alert.severity, ':warning:')} MCP Gateway alert ({alert.severity}): "
        f"{slack_escape(alert.message)} [rule {alert.rule}, alert {alert.id}]"
    )
    return {"text": text if len(text) <= _TEXT_MAX else text[: _TEXT_MAX - 1] + "…"}


class AlertNotifier:
    """Queues alerts (``submit``) and posts them from ``run``, one at a time (``Webhook``'s
    arguments; ``queue_size`` alerts are held, more are dropped and logged: they stay on the board)."""

    def __init__(
        self,
        webhook_url: str,
        *,
        resolve_secret: Callable[[str], SecretValue] | None = None,
        allow_private_network: bool = False,
        timeout_seconds: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        queue_size: int = 100,
    ) -> None:
        self.webhook = Webhook(
            webhook_url,
            what="alert",
            resolve_secret=resolve_secret,
            allow_private_network=allow_private_network,
            timeout_seconds=timeout_seconds,
            transport=transport,
            queue_size=queue_size,
        )

    def __repr__(self) -> str:
        return "AlertNotifier(<webhook>)"

    @property
    def sent(self) -> int:
        """Alerts the webhook accepted."""
        return self.webhook.sent

    def submit(self, alert: Alert) -> None:
        """Queue ``alert`` for ``run`` (call from the event loop's thread)."""
        self.webhook.submit(alert.id, alert_message(alert))

    async def run(self) -> None:
        """Send what ``submit`` queues until cancelled."""
        await self.webhook.run()

    async def notify(self, alert: Alert) -> bool:
        """Post ``alert`` now; True when the webhook accepted it. Never raises."""
        return await self.webhook.post(alert.id, alert_message(alert))
