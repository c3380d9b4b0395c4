"""The ``siem:`` section of ``gateway.yaml``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mcp_gateway.connectors.lineage.config import LineageSink

SINK_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

Format = Literal["ocsf", "jsonl"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class SyslogTls(_Model):
    """TLS toward a syslog receiver (RFC 5425).

    Attributes:
        ca_file: the CA bundle that signs the receiver's certificate (None: the system's CAs).
        server_name: the name the certificate must carry (None: ``host``).
        cert_file, key_file: a client certificate, for receivers that require one.
    """

    ca_file: Path | None = None
    server_name: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> SyslogTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("siem: a syslog tls client certificate needs both `cert_file` and `key_file`")
        return self


class SyslogSink(_Model):
    """An RFC 5424 syslog receiver over TCP, octet-counted framing (RFC 6587), optionally TLS.

    Attributes:
        host, port: the receiver.
        tls: TLS settings; None: plain TCP (use it only on a trusted network).
        format: ``ocsf`` (one OCSF event per message) or ``jsonl`` (the audit record as JSON).
        app_name: RFC 5424 APP-NAME.
        facility: RFC 5424 facility (13: log audit).
        hostname: RFC 5424 HOSTNAME (None: this machine's name).
        timeout_seconds: connect and write timeout.
    """

    type: Literal["syslog"] = "syslog"
    host: str
    port: int = Field(default=6514, ge=1, le=65535)
    tls: SyslogTls | None = None
    format: Format = "ocsf"
    app_name: str = Field(default="mcp-gateway", pattern=r"^[!-~]{1,48}$")
    facility: int = Field(default=13, ge=0, le=23)
    hostname: str | None = Field(default=None, pattern=r"^[!-~]{1,255}$")
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)


class HttpSink(_Model):
    """A Splunk-HEC-compatible HTTP collector (Splunk, Cribl, Vector, Elastic's HEC input...).

    Attributes:
        url: the collector endpoint, e.g. ``https://splunk:8088/services/collector/event``.
        token: ``secret://NAME``: the HEC token, sent as ``Authorization: Splunk <token>``.
        format: ``ocsf`` or ``jsonl`` (the ``event`` of each HEC envelope).
        index, source, sourcetype: HEC envelope fields (None: the collector's defaults; sourcetype
            defaults to ``mcp:gateway:ocsf`` / ``mcp:gateway:audit``).
        allow_private_network: let the collector be a loopback/private address (off: SSRF guard).
        timeout_seconds: per request.
    """

    type: Literal["http"] = "http"
    url: str
    token: str | None = None
    format: Format = "ocsf"
    index: str | None = None
    source: str | None = None
    sourcetype: str | None = None
    allow_private_network: bool = False
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("siem: an http sink's url must be http(s)")
        return value

    @field_validator("token")
    @classmethod
    def _secret_token(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"secret://[A-Za-z0-9_.-]{1,128}", value):
            # Never quote the value: it may be the token itself, pasted by mistake.
            raise ValueError("siem: an http sink's token must be a secret://NAME reference to the vault")
        return value


Sink = Annotated[SyslogSink | HttpSink | LineageSink, Field(discriminator="type")]


class SiemSettings(_Model):
    """Where audit records are streamed (none by default).

    Each sink has its own durable cursor (the last seq it accepted), so a sink that is down catches
    up when it is back and a restarted gateway resumes where it stopped.

    Attributes:
        sinks: name → sink (``type: syslog``, ``type: http`` or ``type: openlineage``: the data
            actions as OpenLineage run events, ``connectors/lineage/``).
        cursor_path: the SQLite file holding each sink's cursor, relative to ``data_dir`` (unused
            with a shared ``store:``: the cursors are then in its ``siem_cursor`` table).
        start_at: where a sink with no cursor yet begins: ``beginning`` (the whole log) or ``end``
            (records written from now on).
        batch_size: records sent per batch (one HEC request; one TCP write).
        poll_seconds: how often to look for new records when caught up.
        retry_initial_seconds, retry_max_seconds: exponential backoff (with jitter) between failed
            deliveries; a sink is retried until it accepts, so nothing is skipped.
    """

    sinks: dict[str, Sink] = Field(default_factory=dict)
    cursor_path: Path = Path("siem-cursor.db")
    start_at: Literal["beginning", "end"] = "beginning"
    batch_size: int = Field(default=200, ge=1, le=5000)
    poll_seconds: float = Field(default=1.0, gt=0, le=60)
    retry_initial_seconds: float = Field(default=0.5, gt=0, le=60)
    retry_max_seconds: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("sinks")
    @classmethod
    def _sink_names(cls, value: dict[str, Sink]) -> dict[str, Sink]:
        for name in value:
            if not SINK_NAME.match(name):
                raise ValueError(f"siem: sink name `{name[:64]}` must match {SINK_NAME.pattern}")
        return value
