"""A request's headers, read from the ASGI scope once per request, and the checks made on them.

Each layer in front of ``/mcp`` (authentication, the era router, the front doors) reads a few headers.
Starlette's ``Headers`` decodes and lower-cases every header line again for each lookup (a dozen
lookups per call, each a scan); here the scope's header lines become one dict the first time a layer
asks, kept in the scope for the next. The values are what Starlette reads: the first line of a name,
names as the server gave them (ASGI servers give them lower-cased), values as bytes.
"""

from __future__ import annotations

import functools
from typing import Final

from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Scope

_KEY: Final = "mcp_gateway.headers"


def headers_of(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers, name → first value (built once, then kept in ``scope``)."""
    found: dict[bytes, bytes] | None = scope.get(_KEY)
    if found is None:
        raw = scope["headers"]
        if not isinstance(raw, list):
            raw = scope["headers"] = list(raw)  # as Starlette does: it may be any iterable
        found = dict(raw)
        if len(found) != len(raw):
            found = dict(reversed(raw))  # a name sent twice: the first line is the one read
        scope[_KEY] = found
    return found


def repeats(scope: Scope, headers: dict[bytes, bytes]) -> bool:
    """Whether any header name may appear more than once, letter case aside (then ask the SDK which);
    ``headers`` is ``headers_of(scope)``."""
    return len(headers) != len(scope["headers"]) or not b"".join(headers).islower()


@functools.lru_cache(maxsize=64)
def accepts(accept: bytes) -> tuple[bool, bool]:
    """``(json, sse)``: what an ``Accept`` header value takes, wildcards included (RFC 9110).

    Cached: a client sends the same ``Accept`` on every request.
    """
    kinds = [part.split(";")[0].strip().lower() for part in accept.decode("latin-1").split(",")]
    anything = "*/*" in kinds
    return (
        anything or "application/json" in kinds or "application/*" in kinds,
        anything or "text/event-stream" in kinds or "text/*" in kinds,
    )


def plainly_allowed(settings: TransportSecuritySettings, headers: dict[bytes, bytes], post: bool) -> bool:
    """True when the SDK's ``TransportSecurityMiddleware`` lets the request through on its first,
    exact-match test of each header (JSON ``Content-Type`` for a POST, a listed ``Host``, no or a
    listed ``Origin``); False sends the request to the SDK's own check, which decides (wildcard
    ports) and words the refusal.
    """
    if post:
        content_type = headers.get(b"content-type")
        if content_type is None or not content_type.lower().startswith(b"application/json"):
            return False
    if not settings.enable_dns_rebinding_protection:
        return True
    host = headers.get(b"host")
    if not host or host.decode("latin-1") not in settings.allowed_hosts:
        return False
    origin = headers.get(b"origin")
    return not origin or origin.decode("latin-1") in settings.allowed_origins
