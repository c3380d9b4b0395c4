"""A Splunk-HTTP-Event-Collector-compatible collector: one POST per batch.

The body is the HEC "event" form, one JSON envelope per record, concatenated::

    {"time": 1764810000.123, "host": "...", "source": "mcp-gateway", "sourcetype": "mcp:gateway:ocsf",
     "event": {...}, "fields": {"event_id": "...", "seq": 7}}

with ``Authorization: Splunk <token>``; the token is resolved from the vault (``secret://NAME``) at
each send and never logged or put in an error. A 2xx answer is the collector's acknowledgement;
anything else (or no answer) is a ``DeliveryError`` and the batch is sent again later. The request
goes through the SSRF guard (``netguard.GuardedTransport``) unless ``allow_private_network``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from mcp_gateway.connectors.netguard import BlockedAddress, GuardedTransport
from mcp_gateway.connectors.siem.config import HttpSink
from mcp_gateway.connectors.siem.ocsf import event_id
from mcp_gateway.connectors.siem.syslog import DeliveryError
from mcp_gateway.connectors.webhook import safe_url
from mcp_gateway.errors import GatewayError
from mcp_gateway.types import SECRET_REF, AuditRecord, SecretValue


class HecDelivery:
    """Posts batches to one HTTP collector.

    Args:
        name: the sink's name (for messages).
        settings: the sink.
        resolve_secret: vault lookup for the ``secret://`` token.
        transport: an httpx transport instead of the guarded network one (tests).
    """

    def __init__(
        self,
        name: str,
        settings: HttpSink,
        resolve_secret: Callable[[str], SecretValue] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._resolve = resolve_secret
        self._where = safe_url(settings.url)
        self._host = socket.gethostname()
        self._client = httpx.AsyncClient(
            timeout=settings.timeout_seconds,
            follow_redirects=False,
            transport=transport or GuardedTransport(allow_private_network=settings.allow_private_network),
        )

    def __repr__(self) -> str:
        return f"HecDelivery({self.name!r}, {self._where})"

    def _token(self) -> str | None:
        ref = self.settings.token
        if ref is None:
            return None
        match = SECRET_REF.fullmatch(ref)
        if match is None or self._resolve is None:
            raise DeliveryError(f"siem sink `{self.name}`: its token cannot be resolved here")
        try:
            return self._resolve(match.group(1)).reveal_text().strip()
        except GatewayError as exc:  # vault errors name the secret, never its value
            raise DeliveryError(f"siem sink `{self.name}`: token unavailable: {exc}") from None

    def envelope(self, record: AuditRecord, body: str) -> str:
        """The HEC envelope of one record (``body`` is its JSON event)."""
        settings = self.settings
        head: dict[str, Any] = {
            "time": round(record.ts, 3),
            "host": self._host,
            "source": settings.source or "mcp-gateway",
            "sourcetype": settings.sourcetype
            or ("mcp:gateway:ocsf" if settings.format == "ocsf" else "mcp:gateway:audit"),
            "fields": {"event_id": event_id(record), "seq": record.seq},
        }
        if settings.index:
            head["index"] = settings.index
        text = json.dumps(head, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        # ``body`` is already compact JSON: splice it in rather than parse and encode it again.
        return text[:-1] + ',"event":' + body + "}"

    async def send(self, batch: Sequence[tuple[AuditRecord, str]]) -> None:
        """POST ``batch``; returns when the collector answered 2xx.

        Raises:
            DeliveryError: refused, unreachable, timed out or a non-2xx answer (status only).
        """
        headers = {"Content-Type": "application/json"}
        token = self._token()
        if token is not None:
            headers["Authorization"] = f"Splunk {token}"
        content = "\n".join(self.envelope(record, body) for record, body in batch).encode("utf-8")
        try:
            response = await self._client.post(self.settings.url, content=content, headers=headers)
        except BlockedAddress as exc:
            raise DeliveryError(f"siem sink `{self.name}`: refused by the network guard: {exc}") from None
        except httpx.HTTPError as exc:
            # httpx messages can quote the URL; name the error class only.
            raise DeliveryError(
                f"siem sink `{self.name}`: {self._where} unreachable ({type(exc).__name__})"
            ) from None
        if not response.is_success:
            raise DeliveryError(
                f"siem sink `{self.name}`: {self._where} answered HTTP {response.status_code}"
            )

    async def aclose(self) -> None:
        await self._client.aclose()
