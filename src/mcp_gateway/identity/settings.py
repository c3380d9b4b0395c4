"""``oauth:`` in gateway.yaml: an external identity provider whose JWT access tokens the gateway
accepts (``identity/oauth.py``)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

# RFC 6749 3.3 scope-token: no space, `"` or `\`, so a scope can sit inside a WWW-Authenticate header.
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
# Public-key algorithms only: `none` and HS* (a shared secret, or a public key misused as one) never.
OAUTH_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class OAuthSettings(BaseModel):
    """An external identity provider whose JWT access tokens the gateway accepts (see ``oauth.py``)."""

    # A refused value may be an inline credential: errors name the key, never echo the input.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    issuer: str = Field(min_length=1)
    """The exact value a token's ``iss`` must carry."""
    jwks_url: str
    """Where the issuer publishes its signing keys (https, or http on loopback only)."""
    audience: str | None = None
    """The resource a token's ``aud`` must name; defaults to ``<public_url>/mcp`` (RFC 8707)."""
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    agent_claim: str | None = Field(default=None, min_length=1)
    """The claim naming the agent; unset: ``client_id``, else ``azp``, else ``sub``."""
    agents: dict[str, str] = Field(default_factory=dict)
    """Claim value → agent name; when given, a value that is not listed is refused."""
    required_scopes: tuple[str, ...] = ()
    """Scopes every token must carry, else 403 ``insufficient_scope``."""
    jwks_cache_seconds: float = Field(default=300, gt=0)
    jwks_min_refetch_seconds: float = Field(default=10, ge=0)
    """Least time between two JWKS fetches, so unknown key ids cannot force a fetch storm."""
    leeway_seconds: float = Field(default=30, ge=0, le=300)
    """Clock skew tolerated on ``exp``/``nbf``/``iat``."""

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, value: str) -> str:
        parts = urlsplit(value)
        # Keys fetched over plain http could be swapped in transit; allow it only on this machine.
        if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOOPBACK):
            raise ValueError("jwks_url must be https (http only on loopback)")
        return value

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("algorithms must not be empty")
        for alg in value:
            if alg not in OAUTH_ALGORITHMS:
                raise ValueError(
                    f"algorithm `{alg}` is not allowed (one of {', '.join(sorted(OAUTH_ALGORITHMS))})"
                )
        return value

    @field_validator("required_scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for scope in value:
            if not SCOPE_TOKEN.match(scope):
                raise ValueError(
                    f"scope `{scope}` must be one scope token (no spaces, quotes or backslashes)"
                )
        return value
