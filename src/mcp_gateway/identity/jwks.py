"""The issuer's signing keys for OAuth token verification (``oauth.py``): fetching and caching a JWKS.

Keys come from ``JWKSCache``: fetched through an injected function (no network at import or
construction), kept for a TTL, refetched once when a token names an unknown ``kid`` (key rotation),
and never fetched more often than a minimum interval, so a stream of tokens with made-up key ids
cannot turn the gateway into a fetch storm against the identity provider. If a refresh fails, the
previous keys serve for at most one more TTL.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from mcp_gateway.errors import AuthError
from mcp_gateway.types import Clock

logger = logging.getLogger(__name__)

JWKSFetcher = Callable[[], Awaitable[Mapping[str, Any]]]
"""Returns the issuer's JWKS document; raises (anything) when it cannot."""

MAX_JWKS_BYTES = 1_048_576
MIN_RSA_BITS = 2048


def http_jwks_fetcher(
    url: str, *, client: httpx.AsyncClient | None = None, timeout: float = 10.0
) -> JWKSFetcher:
    """A ``JWKSFetcher`` that GETs ``url``.

    Args:
        url: the JWKS endpoint.
        client: the HTTP client to use (tests pass one with a ``MockTransport``); without one, each
            fetch opens and closes its own, as fetches are minutes apart.
        timeout: seconds per fetch when the fetcher opens its own client.

    Raises (from the returned function):
        httpx.HTTPError: the request failed.
        ValueError: a non-200 answer, a body over ``MAX_JWKS_BYTES``, or not a JSON object
            (``json.JSONDecodeError`` is a ``ValueError``).
    """

    async def get(http: httpx.AsyncClient) -> Mapping[str, Any]:
        # Redirects are not followed: the keys must come from the configured place.
        async with http.stream("GET", url, headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise ValueError(f"jwks endpoint answered {response.status_code}")
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError("jwks document is too large")
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("jwks document is not a JSON object")
        return document

    async def fetch() -> Mapping[str, Any]:
        if client is not None:
            return await get(client)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as own:
            return await get(own)

    return fetch


def parse_jwks(document: Mapping[str, Any], algorithms: Sequence[str]) -> tuple[jwt.PyJWK, ...]:
    """The usable signing keys of a JWKS document.

    Skipped: symmetric (``oct``) keys, keys whose ``use`` is not ``sig``, keys whose algorithm is not
    allowed, RSA keys under 2048 bits, and keys PyJWT cannot load.

    Args:
        document: the decoded JWKS (``{"keys": [...]}``).
        algorithms: the allowed algorithms.

    Raises:
        ValueError: the document has no ``keys`` list.
    """
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("jwks document has no `keys` list")
    keys: list[jwt.PyJWK] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") == "oct" or entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
        if key.algorithm_name not in algorithms:
            continue
        if isinstance(key.key, rsa.RSAPublicKey | rsa.RSAPrivateKey) and key.key.key_size < MIN_RSA_BITS:
            continue
        keys.append(key)
    return tuple(keys)


class JWKSCache:
    """The issuer's signing keys: TTL-cached, refetched once on an unknown key id, rate-limited.

    Args:
        fetch: returns the JWKS document (see ``http_jwks_fetcher``).
        algorithms: allowed algorithms (keys for others are dropped).
        ttl: seconds a fetched key set is fresh.
        min_interval: least seconds between two fetch attempts (successful or not).
        clock: a monotonic clock.
        fetch_timeout: seconds a fetch may take; requests needing keys wait for it, so it is bounded.
    """

    def __init__(
        self,
        fetch: JWKSFetcher,
        *,
        algorithms: Sequence[str],
        ttl: float = 300.0,
        min_interval: float = 10.0,
        clock: Clock = time.monotonic,
        fetch_timeout: float = 10.0,
    ) -> None:
        self._fetch = fetch
        self._fetch_timeout = fetch_timeout
        self._algorithms = tuple(algorithms)
        self._ttl = ttl
        self._min_interval = min_interval
        self._clock = clock
        self._keys: tuple[jwt.PyJWK, ...] = ()
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._generation = 0
        self._lock = anyio.Lock()
        self.fetches = 0
        """Fetch attempts so far (for tests and metrics)."""

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            # Without a key id the only unambiguous choice is a set of one.
            return self._keys[0] if len(self._keys) == 1 else None
        return next((key for key in self._keys if key.key_id == kid), None)

    async def _refresh(self, seen: int) -> None:
        async with self._lock:
            if self._generation != seen:
                return  # another request refreshed while this one waited
            now = self._clock()
            if self._attempted_at is not None and now - self._attempted_at < self._min_interval:
                return
            self._attempted_at = now
            self.fetches += 1
            try:
                with anyio.fail_after(self._fetch_timeout):
                    document = await self._fetch()
                keys = parse_jwks(document, self._algorithms)
            except Exception as exc:
                # Any failure keeps the previous keys (bounded below); the fetcher's error names no secret.
                logger.warning("jwks fetch failed: %s: %s", type(exc).__name__, exc)
                return
            self._keys, self._fetched_at = keys, now
            self._generation += 1

    async def get(self, kid: str | None) -> jwt.PyJWK:
        """The signing key named ``kid`` (or the only key, when ``kid`` is None).

        Raises:
            AuthError: no keys could be fetched, or no key has that id even after one refetch.
        """
        seen = self._generation
        refreshed = False
        if self._fetched_at is None or self._clock() - self._fetched_at >= self._ttl:
            await self._refresh(seen)
            refreshed = self._generation != seen
        # A failed refresh may serve the previous keys for one more TTL, then nothing.
        if self._fetched_at is None or self._clock() - self._fetched_at >= 2 * self._ttl:
            raise AuthError("signing keys unavailable")
        key = self._find(kid)
        if key is None and not refreshed:
            await self._refresh(self._generation)
            key = self._find(kid)
        if key is None:
            raise AuthError("unknown signing key")
        return key
