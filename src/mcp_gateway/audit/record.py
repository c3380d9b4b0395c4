"""The pure core of the tamper-evident audit log: canonical form and chaining (checking: ``verify.py``).

Every record carries the hash of the record before it (``prev_hash``; the first carries ``GENESIS``)
and its own ``hash``: SHA-256 over the canonical JSON of all its other fields.

No I/O happens here.
"""

from __future__ import annotations

import _json
import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from mcp_gateway.errors import AuditWriteError
from mcp_gateway.types import AuditEvent, AuditRecord

GENESIS = "0" * 64
"""The ``prev_hash`` of the first record."""

_TEXT_FIELDS = ("kind", "call_id", "agent", "tool", "decision", "status")


# One C encoder for every canonical text: ``json.dumps`` builds a ``JSONEncoder`` and a C encoder per
# call, about two thirds of the cost of encoding a small dict (27k instructions; 9k with one encoder
# reused, callgrind). It has no ``markers`` (the circular-reference check), so it keeps no state
# between calls or threads; a circular value recurses, and is encoded again by the checking encoder
# to raise ``json.dumps``'s own error.
_CHECKING = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_ENCODE = _json.make_encoder(
    None, _CHECKING.default, json.encoder.encode_basestring, None, ":", ",", True, False, True
)


def _canonical_text(obj: Any) -> str:
    """``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``, cheaper."""
    try:
        return "".join(_ENCODE(obj, 0))
    except RecursionError:
        return _CHECKING.encode(obj)


def canonical(obj: Any) -> bytes:
    """The canonical JSON bytes of ``obj``: sorted keys, no whitespace, UTF-8.

    Raises:
        TypeError: ``obj`` holds something JSON cannot represent.
    """
    # A lone surrogate (legal in a Python str) must still hash deterministically, never crash.
    return _canonical_text(obj).encode("utf-8", "surrogatepass")


def digest(obj: Any) -> str:
    """SHA-256 hex of ``canonical(obj)``; used for result digests."""
    return hashlib.sha256(canonical(obj)).hexdigest()


_HASHED_FIELDS = tuple(f.name for f in dataclasses.fields(AuditRecord) if f.name != "hash")
_encode_str: Callable[[str], str] = json.encoder.encode_basestring
"""How ``json.dumps(..., ensure_ascii=False)`` writes a string."""


def content_hash(record: AuditRecord) -> str:
    """The hash ``record`` must carry: SHA-256 over the canonical JSON of every field but ``hash``."""
    fields = {name: getattr(record, name) for name in _HASHED_FIELDS}
    fields["args"] = dict(record.args)
    fields["detail"] = dict(record.detail)
    return digest(fields)


def _clean_text(value: str) -> str:
    # Storage back ends reject lone surrogates (UTF-8) and NUL (PostgreSQL text). Agents control some
    # of these strings, so an odd character must not make a call unauditable: store U+FFFD instead.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value.replace("\x00", "\ufffd")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        # Non-finite numbers are not JSON; keep what they were as text rather than refuse the call.
        return float(value) if math.isfinite(value) else json.dumps(value)
    if isinstance(value, str):
        return _clean_text(str.__str__(value))
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str):
                name = _clean_text(str.__str__(key))
            elif key is None or isinstance(key, int | float):
                name = json.dumps(key)  # what json.dumps would have made of the key
            else:
                raise AuditWriteError(f"audit field `{where}` has a key of type `{type(key).__name__}`")
            out[name] = _clean(item, where)
        return out
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [_clean(item, where) for item in value]
    raise AuditWriteError(f"audit field `{where}` holds a `{type(value).__name__}`, which is not json")


_AS_IS = object()
"""``_plain``'s answer for a value that needs ``_clean``."""


def _plain(value: Any) -> Any:
    """What ``_clean`` makes of ``value`` when that is only a copy of it; else ``_AS_IS``.

    The common case, an exact ``dict``/``list`` (nested or not) of exact ``str``, ``int``, ``bool``,
    ``None`` and finite ``float``, with text free of NUL and lone surrogates, costs no function call
    per value here (``normalize_event`` of a tools/call intent: 35k instructions instead of 80k).
    Anything else goes to ``_clean`` whole; a property test holds both paths equal.
    """
    is_dict = type(value) is dict
    out: dict[Any, Any] = {}
    for key, item in value.items() if is_dict else enumerate(value):
        if is_dict and (type(key) is not str or "\x00" in key or not (key.isascii() or _is_utf8(key))):
            return _AS_IS
        kind = type(item)
        if kind is str:
            if "\x00" in item or not (item.isascii() or _is_utf8(item)):
                return _AS_IS
        elif kind is dict or kind is list:
            item = _plain(item)
            if item is _AS_IS:
                return _AS_IS
        elif kind is float:
            if not math.isfinite(item):
                return _AS_IS
        elif kind is not int and kind is not bool and item is not None:
            return _AS_IS
        out[key] = item
    return out if is_dict else list(out.values())


@dataclasses.dataclass(frozen=True, slots=True)
class _CleanEvent(AuditEvent):
    """What ``normalize_event`` returns: storable, with ``args``/``detail`` copies nobody else holds,
    so ``chain`` need not clean it again (the audit log normalises before the sink chains)."""


def normalize_event(event: AuditEvent) -> AuditEvent:
    """``event`` made storable: JSON-only ``args``/``detail``, text without NUL or lone surrogates.

    Idempotent. Raises:
        AuditWriteError: a field holds a value JSON cannot represent (names the field, not the value).
    """
    if type(event) is _CleanEvent:
        return event
    kind, call_id, agent, tool, decision, status = (
        event.kind,
        event.call_id,
        event.agent,
        event.tool,
        event.decision,
        event.status,
    )
    # All six exact ``str`` and storable as they are (one check of them joined): the common case.
    plain = str is type(kind) is type(call_id) is type(agent) is type(tool) is type(decision) is type(status)
    if plain:
        joined = kind + call_id + agent + tool + decision + status
        plain = "\x00" not in joined and (joined.isascii() or _is_utf8(joined))
    if not plain:
        texts: list[str] = []
        for name in _TEXT_FIELDS:
            value = getattr(event, name)
            if not isinstance(value, str):
                raise AuditWriteError(f"audit field `{name}` must be text, not `{type(value).__name__}`")
            texts.append(_clean_text(value))
        kind, call_id, agent, tool, decision, status = texts
    args: Any = _plain(event.args) if type(event.args) is dict else _AS_IS
    if args is _AS_IS:
        args = _clean(event.args, "args")
    detail: Any = _plain(event.detail) if type(event.detail) is dict else _AS_IS
    if detail is _AS_IS:
        detail = _clean(event.detail, "detail")
    # Positional (a fifth cheaper than keywords); a test pins the field order.
    return _CleanEvent(kind, call_id, agent, tool, decision, status, args, detail)


def chain(
    prev: AuditRecord | tuple[int, str] | None, events: Iterable[AuditEvent], ts: float
) -> list[AuditRecord]:
    """Chain ``events`` after ``prev`` (a record, its ``(seq, hash)``, or None for an empty log).

    Every record of one call gets the same ``ts``. Raises:
        AuditWriteError: an event is not storable (see ``normalize_event``).
    """
    return [record for record, _, _ in chain_encoded(prev, events, ts)]


def chain_encoded(
    prev: AuditRecord | tuple[int, str] | None, events: Iterable[AuditEvent], ts: float
) -> list[tuple[AuditRecord, str, str]]:
    """``chain``, each record with the canonical JSON text of its ``args`` and ``detail``.

    Sinks store those texts, so each is encoded once: the record's hash is assembled from the same
    pieces (byte for byte what ``content_hash`` computes; a property test holds them equal).
    """
    if prev is None:
        seq, prev_hash = 0, GENESIS
    elif isinstance(prev, AuditRecord):
        seq, prev_hash = prev.seq, prev.hash
    else:
        seq, prev_hash = prev
    ts = float(ts)
    stamp = float.__repr__(ts)  # how json.dumps writes a finite float
    encoded: list[tuple[AuditRecord, str, str]] = []
    for event in events:
        clean = normalize_event(event)
        seq += 1
        kind, call_id, agent, tool = clean.kind, clean.call_id, clean.agent, clean.tool
        decision, status, args, detail = clean.decision, clean.status, clean.args, clean.detail
        args_json, detail_json = _canonical_text(args), _canonical_text(detail)
        # The canonical JSON of the hashed fields, keys sorted (a join: a quarter of str.format's cost).
        body = "".join(
            (
                '{"agent":',
                _encode_str(agent),
                ',"args":',
                args_json,
                ',"call_id":',
                _encode_str(call_id),
                ',"decision":',
                _encode_str(decision),
                ',"detail":',
                detail_json,
                ',"kind":',
                _encode_str(kind),
                ',"prev_hash":',
                _encode_str(prev_hash),
                ',"seq":',
                int.__repr__(seq),
                ',"status":',
                _encode_str(status),
                ',"tool":',
                _encode_str(tool),
                ',"ts":',
                stamp,
                "}",
            )
        )
        record_hash = hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()
        # Positional (a fifth cheaper than keywords); a test pins the field order.
        record = AuditRecord(
            seq, ts, kind, call_id, agent, tool, decision, status, args, detail, prev_hash, record_hash
        )
        encoded.append((record, args_json, detail_json))
        prev_hash = record_hash
    return encoded
