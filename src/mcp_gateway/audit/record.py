"""The pure core of the tamper-evident audit log: canonical form and chaining (checking: ``verify.py``).

Every record carries the hash of the record before it (``prev_hash``; the first carries ``GENESIS``)
and its own ``hash``: SHA-256 over the canonical JSON of all its other fields.

No I/O happens here.
"""

from __future__ import annotations

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


def _canonical_text(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


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
_SORTED_FIELDS = tuple(sorted(_HASHED_FIELDS))  # the order canonical JSON writes them in
_KEY_PREFIX = {name: _canonical_text(name) + ":" for name in _HASHED_FIELDS}
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
    texts: dict[str, str] = {}
    for name in _TEXT_FIELDS:
        value = getattr(event, name)
        if not isinstance(value, str):
            raise AuditWriteError(f"audit field `{name}` must be text, not `{type(value).__name__}`")
        texts[name] = _clean_text(value)
    return _CleanEvent(**texts, args=_clean(event.args, "args"), detail=_clean(event.detail, "detail"))


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
        texts = {name: getattr(clean, name) for name in _TEXT_FIELDS}
        args_json, detail_json = _canonical_text(clean.args), _canonical_text(clean.detail)
        pieces = {name: _encode_str(value) for name, value in texts.items()}
        pieces.update(
            seq=int.__repr__(seq),
            ts=stamp,
            args=args_json,
            detail=detail_json,
            prev_hash=_encode_str(prev_hash),
        )
        body = ",".join(_KEY_PREFIX[name] + pieces[name] for name in _SORTED_FIELDS)
        record_hash = hashlib.sha256(("{" + body + "}").encode("utf-8", "surrogatepass")).hexdigest()
        record = AuditRecord(
            seq=seq,
            ts=ts,
            **texts,
            args=clean.args,
            detail=clean.detail,
            prev_hash=prev_hash,
            hash=record_hash,
        )
        encoded.append((record, args_json, detail_json))
        prev_hash = record_hash
    return encoded
