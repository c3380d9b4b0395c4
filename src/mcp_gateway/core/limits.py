"""Resource limits on the call path: argument size and depth, result size, calls in flight per agent.

Each limit gives a clear refusal (``LimitExceeded``) instead of a crash, a hang or a silent cut, and a
result that is too large is cut at a content-block boundary with a marker that says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mcp_gateway.errors import CallRefused, InvalidArguments


class LimitSettings(BaseModel):
    """``limits:`` in gateway.yaml: resource limits on the call path."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    max_argument_bytes: int = Field(default=262_144, gt=0)
    """Largest JSON encoding of a call's arguments."""
    max_json_depth: int = Field(default=32, gt=0)
    """Deepest nesting of objects and arrays inside arguments."""
    max_result_bytes: int = Field(default=1_048_576, gt=0)
    """Largest result returned to an agent; larger results are truncated with a marker."""
    max_result_depth: int = Field(default=64, gt=0)
    """Deepest nesting of objects and arrays an upstream's result may have; deeper is garbage."""
    max_concurrent_calls_per_agent: int = Field(default=16, gt=0)


class LimitExceeded(CallRefused):
    """A call exceeded a configured limit."""

    kind = "limit_exceeded"


def json_depth(value: Any, *, limit: int) -> int:
    """Nesting depth of a JSON-like value, counting stops once past ``limit`` (no deep recursion)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def result_problem(value: Any, *, max_depth: int) -> str | None:
    """What makes an upstream's parsed answer unusable, or None.

    Two things JSON parsers accept but the rest of the path cannot carry: nesting deeper than
    ``max_depth`` (the walks over a result recurse) and text that is not Unicode (``"\\ud800"``
    is valid JSON, yet no UTF-8 encoder takes it, so the answer to the agent could not be sent).
    One pass without recursion; it runs on every call, so strings are checked where they are found.
    """
    if isinstance(value, str):
        return _NOT_UNICODE if _not_unicode(value) else None
    if not isinstance(value, Mapping | list | tuple):
        return None
    stack: list[tuple[Any, int]] = [(value, 1)]  # containers only
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return f"a result nested deeper than {max_depth} levels"
        if isinstance(item, dict) or isinstance(item, Mapping):  # dict first: the common, cheap check
            for key, child in item.items():
                if isinstance(key, str) and _not_unicode(key):
                    return _NOT_UNICODE
                if isinstance(child, str):
                    if _not_unicode(child):
                        return _NOT_UNICODE
                elif isinstance(child, _CONTAINERS) or isinstance(child, Mapping):
                    stack.append((child, depth + 1))
        else:  # a list or tuple
            for child in item:
                if isinstance(child, str):
                    if _not_unicode(child):
                        return _NOT_UNICODE
                elif isinstance(child, _CONTAINERS) or isinstance(child, Mapping):
                    stack.append((child, depth + 1))
    return None


_NOT_UNICODE = "text that is not valid Unicode (a lone surrogate)"
_CONTAINERS = (dict, list, tuple)


def _not_unicode(text: str) -> bool:
    return not text.isascii() and not _encodes(text)


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""``json.dumps(..., separators=(",", ":"), ensure_ascii=False)`` without building an encoder per call
(it keeps no state between calls)."""


def check_arguments(arguments: Mapping[str, Any], limits: LimitSettings) -> str:
    """Refuse arguments that are too deep or too large; return their compact JSON text
    (``ensure_ascii=False``), which ``Redactor.clean_json`` can search.

    Raises:
        LimitExceeded: naming the limit and its value, never the arguments.
    """
    max_depth = limits.max_json_depth
    try:
        text = _COMPACT.encode(arguments)
    except (TypeError, ValueError, RecursionError):
        text = None  # the walk below decides first, as it always did (deep before anything else)
    # Each object or array writes one `{` or `[`: with no more of them, nothing is nested deeper, and
    # the walk (a dozen Python calls on every call) is skipped. The C encoder stops at its own depth.
    if text is None or text.count("{") + text.count("[") > max_depth:
        if json_depth(arguments, limit=max_depth) > max_depth:
            raise LimitExceeded(f"arguments are nested deeper than {max_depth} levels")
        if text is None:
            text = _COMPACT.encode(arguments)
    try:
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
    except UnicodeEncodeError:
        # JSON allows "\ud800"; Unicode does not. Refuse it here rather than fail deeper in the path.
        raise InvalidArguments("arguments are not valid unicode (a lone surrogate)") from None
    if size > limits.max_argument_bytes:
        raise LimitExceeded(f"arguments are {size} bytes, above the limit of {limits.max_argument_bytes}")
    return text


def truncate_result(
    payload: dict[str, Any], max_bytes: int, *, size: int | None = None
) -> tuple[dict[str, Any], bool]:
    """Cut a ``CallToolResult`` payload to at most about ``max_bytes`` of JSON.

    Content blocks are kept whole while they fit; a text block that straddles the limit is cut, and a
    text block saying how much was dropped is appended. ``structuredContent`` is dropped if the whole
    does not fit, since half a structure would mislead.

    Args:
        size: the payload's compact UTF-8 JSON size, when the caller already encoded it.

    Returns:
        The payload (possibly new) and whether it was truncated.
    """
    encoded = size if size is not None else _json_size(payload)
    if encoded <= max_bytes:
        return payload, False
    budget = max_bytes
    kept: list[Any] = []
    for block in payload.get("content", []):
        size = _json_size(block)
        if size <= budget:
            kept.append(block)
            budget -= size
            continue
        if isinstance(block, dict) and block.get("type") == "text" and budget > 64:
            text = str(block.get("text", ""))
            kept.append({**block, "text": text.encode("utf-8")[: budget - 64].decode("utf-8", "ignore")})
        break
    marker = {
        "type": "text",
        "text": f"[truncated by mcp-gateway: the result was {encoded} bytes, the limit is {max_bytes}]",
    }
    out = {k: v for k, v in payload.items() if k not in ("content", "structuredContent")}
    out["content"] = [*kept, marker]
    return out, True


def _json_size(value: Any) -> int:
    # surrogatepass: a builtin's own text is not checked by ``result_problem``; sizing must not crash.
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))


class InFlight:
    """Counts calls in flight per agent and refuses past the limit (refuse, not queue: queued calls
    would hold connections open and hide a runaway agent)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def acquire(self, agent: str) -> None:
        """Take one of ``agent``'s slots; pair every success with ``release``.

        Raises:
            LimitExceeded: the agent already has ``limit`` calls in flight.
        """
        count = self._counts.get(agent, 0)
        if count >= self.limit:
            raise LimitExceeded(f"agent has {count} calls in flight, the limit is {self.limit}")
        self._counts[agent] = count + 1

    def release(self, agent: str) -> None:
        remaining = self._counts[agent] - 1
        if remaining:
            self._counts[agent] = remaining
        else:
            del self._counts[agent]
