"""``upstreams:`` in gateway.yaml: one MCP server the gateway fronts, over stdio or Streamable HTTP.

Secret values never appear here: ``env`` and ``headers`` values may hold ``secret://NAME``
references that the connection resolves from the vault when it connects.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mcp_gateway.types import SECRET_REF, SecretValue, secret_refs


class _Model(BaseModel):
    # A refused value may be an inline credential: errors name the key, never echo the input.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class _UpstreamCommon(_Model):
    relay_requests: tuple[Literal["sampling", "elicitation", "roots"], ...] = ()
    """Requests this upstream may put to the agent whose call it serves, mid-call (2025-11-25) or as
    a 2026-07-28 ``input_required`` round; none by default: sampling puts upstream text before the
    agent's model, elicitation before its human, roots shows it the agent's file roots."""
    prefix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{0,64}$")
    """What the upstream's tool and prompt names are offered under: ``<prefix><name>``. Default
    ``<upstream>.``; ``""`` offers them as the upstream names them (two upstreams may not share a
    prefix; a name two sources offer is offered by neither)."""
    required: bool = False
    """Whether the gateway is ready (``/readyz`` 200) only while this upstream is connected. Off by
    default: one optional upstream down should not take every other tool out of a load balancer."""
    protocol: Literal["auto", "legacy"] = "auto"
    """``auto``: 2026-07-28 when the upstream serves it, else the 2025-11-25 handshake; ``legacy``:
    always the handshake (an upstream that sends requests mid-call, rather than returning
    ``input_required``, needs it: on a 2026-07-28 connection a server cannot send requests)."""


class StdioUpstream(_UpstreamCommon):
    transport: Literal["stdio"]
    command: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    cwd: Path | None = None
    timeout_seconds: float = Field(default=60.0, gt=0)


class HttpUpstream(_UpstreamCommon):
    transport: Literal["http"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=60.0, gt=0)
    allow_private_network: bool = False
    """Permit loopback, private and link-local addresses (never on by default: SSRF)."""
    lean_calls: bool = True
    """Send ``tools/call`` to a stateless (2026-07-28) upstream as one pooled POST instead of through
    the SDK client (``connectors/fast_http.py``); off: every request goes through the SDK client."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return value


Upstream = Annotated[StdioUpstream | HttpUpstream, Field(discriminator="transport")]


def required_secrets(config: Upstream) -> set[str]:
    """Every secret name an upstream's config refers to."""
    values = config.env.values() if isinstance(config, StdioUpstream) else config.headers.values()
    return {name for value in values for name in secret_refs(value)}


def substitute(value: str, resolve: Callable[[str], SecretValue]) -> str:
    """``value`` with each ``secret://NAME`` replaced by the secret's value (at connect time only)."""
    return SECRET_REF.sub(lambda m: resolve(m.group(1)).reveal_text(), value)
