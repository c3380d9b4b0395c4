"""RFC 5424 syslog over TCP with octet-counting framing (RFC 6587 §3.4.1), optionally TLS (RFC 5425).

Each record is one message::

    <PRI>1 2026-12-04T01:17:04.123Z HOST mcp-gateway PID KIND [mcpgw@32473 seq="7" eventId="..."] {json}

``MSGID`` is the record's kind; the structured data carries the seq and the stable event id, so a
receiver can drop a resent record by its id. A batch goes out as one write. Plain TCP syslog has no
acknowledgement: before each batch the connection is checked for a receiver that went away (a
closed or reset socket is reconnected first), which covers a receiver restarted between batches; a
receiver that dies while a batch is in flight can lose that batch (use the HTTP collector when
delivery must be acknowledged).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
from collections.abc import Sequence

import anyio
from anyio.abc import ByteStream

from mcp_gateway.connectors.siem.config import SyslogSink
from mcp_gateway.connectors.siem.ocsf import event_id, severity_id
from mcp_gateway.errors import GatewayError
from mcp_gateway.types import AuditRecord

ENTERPRISE_ID = 32473
"""The private enterprise number of the structured-data id (RFC 5612's number for documentation
use: the gateway has none registered; receivers match ``mcpgw@32473``)."""

_PEEK_SECONDS = 0.005
"""How long a batch waits to learn whether a kept-open connection was closed by the receiver."""

# OCSF severity → syslog severity (1 informational → 6, ... 5 critical → 2).
_SYSLOG_SEVERITY = {0: 6, 1: 6, 2: 5, 3: 4, 4: 3, 5: 2}


class DeliveryError(GatewayError):
    """A sink did not accept a batch (the message names the sink's host and the problem, never a
    credential); the exporter retries it."""


def _sd_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _printable(value: str, limit: int) -> str:
    text = "".join(ch if "!" <= ch <= "~" else "_" for ch in value)[:limit]
    return text or "-"


def format_message(record: AuditRecord, body: str, settings: SyslogSink, hostname: str) -> bytes:
    """One RFC 5424 message (no framing) carrying ``body`` for ``record``."""
    pri = settings.facility * 8 + _SYSLOG_SEVERITY.get(severity_id(record), 6)
    stamp = dt.datetime.fromtimestamp(record.ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    sd = (
        f'[mcpgw@{ENTERPRISE_ID} seq="{record.seq}" eventId="{event_id(record)}"'
        f' kind="{_sd_value(record.kind)}"]'
    )
    header = (
        f"<{pri}>1 {stamp} {_printable(hostname, 255)} {settings.app_name} {os.getpid()}"
        f" {_printable(record.kind, 32)} {sd} "
    )
    return header.encode("ascii") + body.encode("utf-8")


def frame(message: bytes) -> bytes:
    """Octet-counting framing: ``MSG-LEN SP SYSLOG-MSG``."""
    return f"{len(message)} ".encode("ascii") + message


def _tls_context(settings: SyslogSink) -> ssl.SSLContext:
    tls = settings.tls
    assert tls is not None  # noqa: S101 - only called with TLS configured
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return context


async def _peer_gone(stream: ByteStream) -> bool:
    """Whether the receiver closed or reset the connection (a syslog receiver never talks back, so
    anything to read, an end of stream or an error, means the session is over)."""
    try:
        with anyio.move_on_after(_PEEK_SECONDS):
            await stream.receive()
            return True
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ssl.SSLError):
        return True
    return False


class SyslogDelivery:
    """Sends batches to one syslog receiver over one kept-open connection.

    Args:
        name: the sink's name (for messages).
        settings: the sink.
        hostname: RFC 5424 HOSTNAME (default: the sink's, else this machine's name).
    """

    def __init__(self, name: str, settings: SyslogSink, hostname: str | None = None) -> None:
        self.name = name
        self.settings = settings
        self.hostname = settings.hostname or hostname or socket.gethostname()
        self._stream: ByteStream | None = None
        self._where = f"{settings.host}:{settings.port}"

    async def _connect(self) -> ByteStream:
        settings = self.settings
        try:
            with anyio.fail_after(settings.timeout_seconds):
                if settings.tls is None:
                    return await anyio.connect_tcp(settings.host, settings.port)
                return await anyio.connect_tcp(
                    settings.host,
                    settings.port,
                    ssl_context=_tls_context(settings),
                    tls_hostname=settings.tls.server_name or settings.host,
                    tls_standard_compatible=False,
                )
        except TimeoutError:
            raise DeliveryError(f"siem sink `{self.name}`: connecting to {self._where} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryError(
                f"siem sink `{self.name}`: cannot connect to {self._where} ({type(exc).__name__}: {exc})"
            ) from None

    async def send(self, batch: Sequence[tuple[AuditRecord, str]]) -> None:
        """Write ``batch`` (record, JSON body) as framed messages in one write.

        Raises:
            DeliveryError: no connection, or the write failed (the connection is dropped).
        """
        data = b"".join(frame(format_message(rec, body, self.settings, self.hostname)) for rec, body in batch)
        if self._stream is not None and await _peer_gone(self._stream):
            await self.aclose()
        if self._stream is None:
            self._stream = await self._connect()
        try:
            with anyio.fail_after(self.settings.timeout_seconds):
                await self._stream.send(data)
        except (TimeoutError, OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            await self.aclose()
            raise DeliveryError(
                f"siem sink `{self.name}`: writing to {self._where} failed ({type(exc).__name__})"
            ) from None

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with anyio.move_on_after(1, shield=True):
                await stream.aclose()
