"""Send the gateway's data actions to an OpenLineage HTTP endpoint (Marquez, DataHub, OpenMetadata...).

A lineage sink is an export sink like a SIEM's (``connectors/siem/exporter.py`` follows the audit log
with a durable cursor and retries a batch until it is accepted): this delivery turns the batch's
records into run events (``events.py``) and POSTs each, in order, as JSON to ``url`` + ``endpoint``.
An outcome whose intent came in an earlier batch finds it in a bounded memory of recent intents, or
else in the audit store by call id. A batch retried after a partial failure resends its first events:
the receiver sees the same run id and state again (OpenLineage consumers treat that as an update).

The API key (``secret://NAME``) is resolved per send and sent as ``Authorization: Bearer``; it is
never logged or put in an error. Events carry only what the audit records say, scrubbed again with
the vault's current values before they leave. The request goes through the SSRF guard unless
``allow_private_network``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Sequence

import httpx

from mcp_gateway.connectors.lineage.config import LineageSink
from mcp_gateway.connectors.lineage.events import LINEAGE_TOOLS, run_event, to_json
from mcp_gateway.connectors.netguard import BlockedAddress, GuardedTransport
from mcp_gateway.connectors.siem.syslog import DeliveryError
from mcp_gateway.connectors.webhook import safe_url
from mcp_gateway.errors import GatewayError
from mcp_gateway.redact import EMPTY, Redactor
from mcp_gateway.types import SECRET_REF, AuditRecord, AuditSink, SecretValue

_REMEMBERED = 10_000
"""Intents kept in memory for their outcomes (older ones are looked up in the audit store)."""


class LineageDelivery:
    """Posts the run events of a batch of audit records (see the module docstring).

    Args:
        name: the sink's name (for messages).
        settings: the sink.
        audit: the audit store (for intents older than the memory).
        resolve_secret: vault lookup for the ``secret://`` API key.
        redactor: the current redactor, applied to each event's JSON.
        transport: an httpx transport instead of the guarded network one (tests).
    """

    def __init__(
        self,
        name: str,
        settings: LineageSink,
        audit: AuditSink,
        resolve_secret: Callable[[str], SecretValue] | None = None,
        redactor: Callable[[], Redactor] = lambda: EMPTY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._audit = audit
        self._resolve = resolve_secret
        self._redactor = redactor
        self._where = safe_url(settings.url)
        self._intents: OrderedDict[str, AuditRecord] = OrderedDict()
        self._client = httpx.AsyncClient(
            timeout=settings.timeout_seconds,
            follow_redirects=False,
            transport=transport or GuardedTransport(allow_private_network=settings.allow_private_network),
        )
        self.sent = 0

    def __repr__(self) -> str:
        return f"LineageDelivery({self.name!r}, {self._where})"

    def _key(self) -> str | None:
        ref = self.settings.api_key
        if ref is None:
            return None
        match = SECRET_REF.fullmatch(ref)
        if match is None or self._resolve is None:
            raise DeliveryError(f"lineage sink `{self.name}`: its api key cannot be resolved here")
        try:
            return self._resolve(match.group(1)).reveal_text().strip()
        except GatewayError as exc:  # vault errors name the secret, never its value
            raise DeliveryError(f"lineage sink `{self.name}`: api key unavailable: {exc}") from None

    def _intent_of(self, record: AuditRecord) -> AuditRecord | None:
        if record.kind == "intent":
            if record.tool in LINEAGE_TOOLS and record.decision == "allow":
                self._intents[record.call_id] = record
                while len(self._intents) > _REMEMBERED:
                    self._intents.popitem(last=False)
                return record
            return None
        if record.kind != "outcome" or record.tool not in LINEAGE_TOOLS:
            return None
        found = self._intents.get(record.call_id)
        if found is None:
            older = self._audit.query(call_id=record.call_id, kind="intent", limit=1)
            found = older[0] if older else None
        return found

    def bodies(self, batch: Sequence[tuple[AuditRecord, str]]) -> list[bytes]:
        """The JSON body of each run event the batch's records make, in order."""
        redactor = self._redactor()
        out: list[bytes] = []
        for record, _ in batch:
            intent = self._intent_of(record)
            if intent is None:
                continue
            event = run_event(record, intent, namespace=self.settings.namespace)
            if event is not None:
                clean, _ = redactor.scrub_json(to_json(event))
                text = json.dumps(clean, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
                out.append(text.encode("utf-8"))
        return out

    async def send(self, batch: Sequence[tuple[AuditRecord, str]]) -> None:
        """POST the batch's run events; returns when each was answered 2xx.

        Raises:
            DeliveryError: refused, unreachable, timed out or a non-2xx answer (status only).
        """
        bodies = self.bodies(batch)
        if not bodies:
            return
        headers = {"Content-Type": "application/json"}
        key = self._key()
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        url = f"{self.settings.url}/{self.settings.endpoint.lstrip('/')}"
        for body in bodies:
            try:
                response = await self._client.post(url, content=body, headers=headers)
            except BlockedAddress as exc:
                raise DeliveryError(
                    f"lineage sink `{self.name}`: refused by the network guard: {exc}"
                ) from None
            except httpx.HTTPError as exc:
                # httpx messages can quote the URL; name the error class only.
                raise DeliveryError(
                    f"lineage sink `{self.name}`: {self._where} unreachable ({type(exc).__name__})"
                ) from None
            if not response.is_success:
                raise DeliveryError(
                    f"lineage sink `{self.name}`: {self._where} answered HTTP {response.status_code}"
                )
            self.sent += 1

    async def aclose(self) -> None:
        await self._client.aclose()
