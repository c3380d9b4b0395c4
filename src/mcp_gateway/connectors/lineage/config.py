"""The ``type: openlineage`` sink of the ``siem:`` section: where the gateway's data actions go as
OpenLineage run events (``delivery.py``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mcp_gateway.types import SECRET_REF


class LineageSink(BaseModel):
    """``type: openlineage``: an OpenLineage HTTP endpoint.

    Attributes:
        url: the server, e.g. ``http://marquez:5000``.
        endpoint: the API path (OpenLineage's default ``api/v1/lineage``).
        api_key: ``secret://NAME``, sent as ``Authorization: Bearer <key>``; None: no auth.
        namespace: the job namespace of the gateway's runs.
        format: always ``jsonl`` (the records are read as audit records, then mapped).
        allow_private_network: let the server be a loopback/private address (off: SSRF guard).
        timeout_seconds: per request.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: Literal["openlineage"] = "openlineage"
    url: str
    endpoint: str = Field(default="api/v1/lineage", pattern=r"^[A-Za-z0-9_./-]{1,200}$")
    api_key: str | None = None
    namespace: str = Field(default="mcp-gateway", min_length=1, max_length=200)
    format: Literal["jsonl"] = "jsonl"
    allow_private_network: bool = False
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("an openlineage sink's url must be http(s)")
        return value.rstrip("/")

    @field_validator("api_key")
    @classmethod
    def _secret_key(cls, value: str | None) -> str | None:
        if value is not None and not SECRET_REF.fullmatch(value):
            # Never quote the value: it may be the key itself, pasted by mistake.
            raise ValueError("an openlineage sink's api_key must be a secret://NAME reference to the vault")
        return value
