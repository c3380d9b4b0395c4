"""The lean path's reading of a request body: a plain ``tools/call`` and nothing else (whatever this
does not recognise goes to the SDK, which answers it as it always does)."""

from __future__ import annotations

from typing import Any, Final

import mcp_types as types

from mcp_gateway import wire

METHOD: Final = "tools/call"
ENVELOPE_KEYS: Final = frozenset(
    {types.PROTOCOL_VERSION_META_KEY, types.CLIENT_INFO_META_KEY, types.CLIENT_CAPABILITIES_META_KEY}
)
_REQUEST_KEYS: Final = frozenset({"jsonrpc", "id", "method", "params"})
_PARAM_KEYS: Final = frozenset({"name", "arguments", "_meta"})
_SESSION_PARAM_KEYS: Final = frozenset({"name", "arguments"})


_Parsed = tuple[dict[str, Any], int | str, dict[str, Any], str, dict[str, Any]]


def loads(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, else None."""
    try:
        decoded = wire.loads(body)
    except (ValueError, RecursionError):
        return None
    return decoded if isinstance(decoded, dict) else None


_Call = tuple[int | str, dict[str, Any], str, dict[str, Any]]


def _plain_call(decoded: dict[str, Any] | None, param_keys: frozenset[str]) -> _Call | None:
    """``(id, params, name, arguments)`` of a ``tools/call`` request whose params hold only
    ``param_keys``, else None."""
    if decoded is None or decoded.keys() - _REQUEST_KEYS:
        return None
    request_id = decoded.get("id")
    if decoded.get("jsonrpc") != "2.0" or decoded.get("method") != METHOD:
        return None
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        return None
    params = decoded.get("params")
    if not isinstance(params, dict) or params.keys() - param_keys:
        return None
    name, arguments = params.get("name"), params.get("arguments", {})
    if not isinstance(name, str) or not isinstance(arguments, dict):
        return None
    return request_id, params, name, arguments


def parse_in_session(decoded: dict[str, Any] | None) -> _Call | None:
    """A plain 2025-era ``tools/call`` (no ``_meta``: a progress token needs the SDK), else None."""
    return _plain_call(decoded, _SESSION_PARAM_KEYS)


def parse(body: bytes) -> _Parsed | None:
    """``(request, id, params, name, arguments)`` of a plain 2026-07-28 ``tools/call`` (its ``_meta``
    only the envelope), else None."""
    decoded = loads(body)
    call = _plain_call(decoded, _PARAM_KEYS)
    if decoded is None or call is None:
        return None
    meta = call[1].get("_meta")
    if not isinstance(meta, dict) or meta.keys() - ENVELOPE_KEYS:
        return None
    return decoded, *call
