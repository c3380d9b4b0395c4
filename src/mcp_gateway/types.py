"""Shared value types and the Protocols the gateway core depends on.

Everything here is pure data or an interface; no I/O happens in this module.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Effect = Literal["allow", "deny"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    Attributes:
        agent: the agent name policy is written against.
        token_id: the public id of the credential used (never the token itself).
        scopes: OAuth scopes, empty for gateway-issued agent tokens.
        source: how the caller authenticated.
    """

    agent: str
    token_id: str
    scopes: frozenset[str] = frozenset()
    source: Literal["agent_token", "oauth"] = "agent_token"


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy decision and why it was taken.

    Attributes:
        effect: ``allow`` or ``deny``.
        rule_ids: ids of the rules that decided (the allowing grant, or the denying rules).
        reasons: human-readable reasons, lowercase, user input in backticks; never secret values.
    """

    effect: Effect
    rule_ids: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.effect == "allow"


@dataclass(frozen=True, slots=True)
class SecretValue:
    """A plaintext secret held in memory. ``repr``/``str`` never show the value."""

    name: str
    _value: bytes = field(repr=False)

    def reveal(self) -> bytes:
        return self._value

    def reveal_text(self) -> str:
        return self._value.decode("utf-8")

    def __str__(self) -> str:
        return f"SecretValue({self.name!r})"

    __repr__ = __str__


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """What a caller asks the audit log to record. The log adds sequence, time and chain hashes.

    Attributes:
        kind: ``intent``, ``outcome``, ``denied``, ``auth_failure``, ``policy_reload``, ``admin``, ...
        call_id: ties an intent to its outcome; empty for events outside a call.
        agent: the principal's agent name, or empty when unknown (auth failures).
        tool: the tool name, or empty.
        decision: ``allow``/``deny``/empty.
        status: ``ok``/``error``/``refused``/empty.
        args: the call's arguments, already redacted.
        detail: extra structured facts (rule ids, reasons, latency_ms, result digest, redacted: bool).
    """

    kind: str
    call_id: str = ""
    agent: str = ""
    tool: str = ""
    decision: str = ""
    status: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One durable, chained audit record.

    ``hash`` is SHA-256 over the canonical JSON of every other field, including ``prev_hash``.
    """

    seq: int
    ts: float
    kind: str
    call_id: str
    agent: str
    tool: str
    decision: str
    status: str
    args: Mapping[str, Any]
    detail: Mapping[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class AuditCheckpoint:
    """A signed statement that the chain had record ``seq`` with hash ``hash`` (see ``audit/checkpoint.py``).

    Attributes:
        seq: the seq of the record the checkpoint covers (every record up to it).
        hash: that record's hash.
        ts: when the checkpoint was signed (epoch seconds).
        key_id: which audit-signing key signed it (hex, derived from the public key).
        signature: the Ed25519 signature over the canonical payload, hex.
    """

    seq: int
    hash: str
    ts: float
    key_id: str
    signature: str


class Clock(Protocol):
    def __call__(self) -> float: ...


def system_clock() -> float:
    """Seconds since the epoch; the default ``Clock``."""
    return time.time()


class AuditSink(Protocol):
    """A durable, append-only, chained store of audit records.

    ``append`` must make every record durable (committed, fsynced) before it returns, and must keep
    the chain valid when several processes append to the same store.
    """

    def append(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        """Chain and durably store ``events`` in order. Raises ``AuditWriteError``."""
        ...

    def records(self, *, after_seq: int = 0, limit: int | None = None) -> list[AuditRecord]:
        """Records with ``seq > after_seq`` in sequence order."""
        ...

    def query(
        self,
        *,
        agent: str | None = None,
        tool: str | None = None,
        decision: str | None = None,
        kind: str | None = None,
        call_id: str | None = None,
        since: float | None = None,
        limit: int = 100,
        arg_hmac: str | None = None,
    ) -> list[AuditRecord]:
        """The newest ``limit`` records matching every given filter, in sequence order.

        ``arg_hmac`` matches records with an argument stored as ``{"hmac": arg_hmac}``.
        """
        ...

    def head(self) -> tuple[int, str] | None:
        """``(seq, hash)`` of the newest record, or None when empty."""
        ...

    def write_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        """Durably store a signed checkpoint. Raises ``AuditWriteError``."""
        ...

    def checkpoints(self) -> list[AuditCheckpoint]:
        """Every stored checkpoint, oldest first."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class LoopAuditSink(Protocol):
    """An ``AuditSink`` that can also commit without waiting, cheaply enough to run on the event loop."""

    def append_nowait(self, events: Sequence[AuditEvent]) -> list[AuditRecord] | None:
        """``append``, or None at once (nothing written) if that would mean waiting for the store."""
        ...


class SecretStore(Protocol):
    """Where sealed secret envelopes live (SQLite by default, PostgreSQL for replicas)."""

    def get(self, name: str) -> bytes | None: ...

    def put(self, name: str, envelope: bytes) -> None: ...

    def delete(self, name: str) -> bool: ...

    def names(self) -> list[str]: ...

    def metadata(self) -> list[dict[str, Any]]: ...

    def generation(self) -> int:
        """A counter that changes whenever any secret is written or removed (for cache refresh)."""
        ...


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the gateway can offer: its public name, definition and where calls go.

    Attributes:
        name: the name agents see (``upstream.tool`` for federated tools).
        upstream: the upstream's name, or ``""`` for built-in tools.
        upstream_tool: the tool's name at the upstream.
        definition: the MCP ``Tool`` object as a JSON-ready dict (name already rewritten).
    """

    name: str
    upstream: str
    upstream_tool: str
    definition: Mapping[str, Any]


SECRET_REF = re.compile(r"secret://([A-Za-z0-9_.-]{1,128})")
"""A reference to a vault secret inside a config value (``secret://NAME``), resolved at use."""


def secret_refs(value: str) -> list[str]:
    """Names of the ``secret://NAME`` references inside ``value``."""
    return SECRET_REF.findall(value)
