"""OAuth 2.1 resource server: JWT access tokens from an external identity provider become principals.

The gateway's own agent tokens (``mgw_...``) stay with ``agents.py``; any other bearer token goes here
when ``oauth:`` is configured. A token is accepted only if all of these hold:

- its header names an allowed public-key algorithm (never ``none``, never HS*: a verifier that holds
  only public keys must not let a public key double as an HMAC secret), and that algorithm is the
  one bound to the signing key it names (``kid``);
- the signature verifies against a key from the issuer's JWKS;
- ``iss`` is the configured issuer, ``aud`` contains this gateway's resource identifier (RFC 8707:
  a token minted for another resource is refused), ``exp``/``nbf``/``iat`` hold within a small leeway.

Signing keys come from ``JWKSCache`` (``jwks.py``): cached, refetched on key rotation, rate-limited.

Every failure is an ``AuthError`` whose message is a fixed phrase: it never carries the token, a
claim value or anything else the caller sent (the message ends up in a ``WWW-Authenticate`` header).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from mcp_gateway.errors import AuthError, ConfigError
from mcp_gateway.identity.jwks import JWKSCache, JWKSFetcher, http_jwks_fetcher
from mcp_gateway.identity.settings import OAuthSettings
from mcp_gateway.types import Clock, Principal

AGENT_TOKEN_PREFIX = "mgw_"  # noqa: S105 - a public prefix that routes the token, not a secret
DEFAULT_AGENT_CLAIMS = ("client_id", "azp", "sub")
MAX_TOKEN_CHARS = 16_384  # far above any real access token; bounds the work an anonymous caller causes
_MAX_CLAIM_CHARS = 256
_REQUIRED_CLAIMS = ["exp", "iss", "aud"]


def is_agent_token(token: str) -> bool:
    """Whether ``token`` is shaped like a gateway-issued agent token (routed to the agent store)."""
    return token.startswith(AGENT_TOKEN_PREFIX)


def token_fingerprint(token: str) -> str:
    """A short one-way name for a token, for audit records (never the token itself)."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """An accepted access token.

    Attributes:
        principal: the caller, with ``source="oauth"`` and the token's scopes.
        issuer: the token's ``iss``.
        subject: the token's ``sub`` (else the agent claim's value): with ``issuer`` it names who the
            token stands for across refreshes, which is what a session is bound to.
        expires_at: the token's ``exp``.
    """

    principal: Principal
    issuer: str
    subject: str
    expires_at: int | None


def _text_claim(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if isinstance(value, str) and 0 < len(value) <= _MAX_CLAIM_CHARS and value.isprintable():
        return value
    return None


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """RFC 9068 ``scope`` (space-separated), or the ``scp`` list some providers send."""
    scope, scp = claims.get("scope"), claims.get("scp")
    if scope is not None:
        if not isinstance(scope, str):
            raise AuthError("invalid scope claim")
        return frozenset(scope.split())
    if scp is not None:
        items = scp.split() if isinstance(scp, str) else scp
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise AuthError("invalid scope claim")
        return frozenset(items)
    return frozenset()


class OAuthVerifier:
    """Verifies JWT access tokens and maps them to principals.

    Args:
        issuer: the exact ``iss`` required.
        audience: the resource identifier ``aud`` must contain.
        jwks: where signing keys come from.
        algorithms: allowed algorithms (public-key ones only; ``OAuthSettings`` enforces it).
        agent_claim: the claim naming the agent; None tries ``client_id``, ``azp``, then ``sub``.
        agents: claim value → agent name; when non-empty, an unlisted value is refused.
        required_scopes: scopes every token must carry (checked by the server, answered with 403).
        leeway: seconds of clock skew tolerated on ``exp``/``nbf``/``iat``.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks: JWKSCache,
        algorithms: Sequence[str] = ("RS256", "ES256", "EdDSA"),
        agent_claim: str | None = None,
        agents: Mapping[str, str] | None = None,
        required_scopes: Sequence[str] = (),
        leeway: float = 30.0,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks = jwks
        self.algorithms = tuple(algorithms)
        self.agent_claims = (agent_claim,) if agent_claim else DEFAULT_AGENT_CLAIMS
        self.agents = dict(agents or {})
        self.required_scopes = frozenset(required_scopes)
        self.leeway = leeway

    @classmethod
    def from_settings(
        cls,
        config: OAuthSettings | None,
        resource_url: str,
        *,
        fetch: JWKSFetcher | None = None,
        clock: Clock = time.monotonic,
    ) -> OAuthVerifier:
        """Build the verifier the ``oauth:`` section describes.

        Args:
            config: the ``oauth:`` section.
            resource_url: the gateway's public URL (the default audience is ``<resource_url>/mcp``).
            fetch: the JWKS fetcher; default: GET ``oauth.jwks_url`` with a fresh client per fetch.
            clock: a monotonic clock for the JWKS cache.

        Raises:
            ConfigError: there is no ``oauth`` section.
        """
        if config is None:
            raise ConfigError("oauth is not configured")
        jwks = JWKSCache(
            fetch or http_jwks_fetcher(config.jwks_url),
            algorithms=config.algorithms,
            ttl=config.jwks_cache_seconds,
            min_interval=config.jwks_min_refetch_seconds,
            clock=clock,
        )
        return cls(
            issuer=config.issuer,
            audience=config.audience or f"{resource_url}/mcp",
            jwks=jwks,
            algorithms=config.algorithms,
            agent_claim=config.agent_claim,
            agents=config.agents,
            required_scopes=config.required_scopes,
            leeway=config.leeway_seconds,
        )

    async def verify(self, token: str) -> VerifiedToken:
        """Verify ``token`` and map it to a principal.

        Raises:
            AuthError: malformed, wrong or unknown key, bad signature, disallowed algorithm, wrong
                issuer or audience, expired or not yet valid, or no agent claim; the message says
                which and never carries the token.
        """
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError("token too large")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthError("malformed token") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AuthError("token algorithm not allowed")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("malformed token")
        key = await self.jwks.get(kid)
        if key.algorithm_name != alg:
            # The key decides the algorithm, never the token (RS256 key, HS256 header: refused).
            raise AuthError("token algorithm does not match its key")
        claims = self._decode(token, key, alg)
        agent, subject = self._agent(claims)
        jti = _text_claim(claims, "jti")
        principal = Principal(
            agent=agent,
            token_id=jti if jti is not None and len(jti) <= 128 else token_fingerprint(token),
            scopes=_scopes(claims),
            source="oauth",
        )
        exp = claims.get("exp")
        return VerifiedToken(
            principal, self.issuer, subject, int(exp) if isinstance(exp, int | float) else None
        )

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise AuthError("token audience is not this gateway") from None
        except jwt.InvalidIssuerError:
            raise AuthError("token issuer is not trusted") from None
        except jwt.MissingRequiredClaimError as exc:
            # `exc.claim` is one of _REQUIRED_CLAIMS: our own text, not the caller's.
            raise AuthError(f"token lacks the `{exc.claim}` claim") from None
        except jwt.InvalidSignatureError:
            raise AuthError("invalid token signature") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthError("invalid token") from None
        return claims

    def _agent(self, claims: Mapping[str, Any]) -> tuple[str, str]:
        value = next((v for name in self.agent_claims if (v := _text_claim(claims, name)) is not None), None)
        if value is None:
            raise AuthError("token names no agent")
        if self.agents:
            agent = self.agents.get(value)
            if agent is None:
                raise AuthError("token client is not mapped to an agent")
        else:
            agent = value
        return agent, _text_claim(claims, "sub") or value
