"""Writing signed checkpoints: into the audit store's own table and into an append-only mirror file.

The mirror exists because whoever truncates the audit store can drop the store's checkpoint rows in
the same stroke; a file elsewhere (ideally on another volume, or marked append-only with
``chattr +a``) keeps them. Each checkpoint is one JSON line, written with ``O_APPEND`` in a single
``write`` and fsynced.

``AuditLog`` decides *when* (after a batch that crosses a multiple of ``every``, and at close); this
module does the blocking work and runs in a worker thread.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mcp_gateway.audit.checkpoint import checkpoint_from_dict, checkpoint_to_dict, sign_checkpoint
from mcp_gateway.errors import AuditError, AuditWriteError
from mcp_gateway.types import AuditCheckpoint, AuditSink, Clock, system_clock


class Checkpointer:
    """Signs checkpoints and stores them in ``sink`` and, if given, the ``mirror`` file.

    Args:
        sink: the audit store whose ``checkpoints`` table receives them.
        signing_key: the audit-signing key.
        every: a checkpoint after each batch that crosses a multiple of this many records;
            0 means only at close.
        interval: seconds between checkpoints by time while there are new records
            (``AuditLog.run_checkpoints``); 0 means none by time.
        mirror: the append-only JSON Lines file, or None for none.
        clock: the time source for the checkpoint's ``ts``.
    """

    def __init__(
        self,
        sink: AuditSink,
        signing_key: Ed25519PrivateKey,
        *,
        every: int = 1000,
        interval: float = 60.0,
        mirror: Path | None = None,
        clock: Clock = system_clock,
    ) -> None:
        if every < 0:
            raise ValueError("every must not be negative")
        self.sink = sink
        self.every = every
        self.interval = interval
        self.mirror = mirror
        self._key = signing_key
        self._clock = clock

    def __repr__(self) -> str:
        return f"Checkpointer(every={self.every}, interval={self.interval}, mirror={self.mirror!r})"

    def due(self, first_seq: int, last_seq: int) -> bool:
        """Whether a batch holding seqs ``first_seq..last_seq`` crosses a multiple of ``every``."""
        return self.every > 0 and (first_seq - 1) // self.every != last_seq // self.every

    def write(self, seq: int, head_hash: str) -> AuditCheckpoint:
        """Sign ``(seq, head_hash)`` and store it in the sink and the mirror (both are tried).

        Raises:
            AuditWriteError: either write failed (the other was still attempted).
        """
        checkpoint = sign_checkpoint(self._key, seq, head_hash, self._clock())
        failures: list[str] = []
        try:
            self.sink.write_checkpoint(checkpoint)
        except AuditError as exc:
            failures.append(str(exc))
        if self.mirror is not None:
            try:
                append_mirror(self.mirror, checkpoint)
            except AuditWriteError as exc:
                failures.append(str(exc))
        if failures:
            raise AuditWriteError(f"checkpoint at seq {seq} not fully stored: {'; '.join(failures)}")
        return checkpoint


def append_mirror(path: Path, checkpoint: AuditCheckpoint) -> None:
    """Append ``checkpoint`` as one JSON line to ``path`` and fsync it (creating the file if needed).

    Raises:
        AuditWriteError: the file cannot be written.
    """
    line = json.dumps(checkpoint_to_dict(checkpoint), sort_keys=True, separators=(",", ":")) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise AuditWriteError(f"checkpoint mirror `{path}` cannot be written: {exc.strerror}") from None


def read_mirror(path: Path) -> list[AuditCheckpoint]:
    """The checkpoints in the mirror file, in file order; empty when the file does not exist.

    Raises:
        AuditError: the file cannot be read, or a line is not a checkpoint (names the line).
    """
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditError(f"checkpoint mirror `{path}` cannot be read: {type(exc).__name__}") from None
    out: list[AuditCheckpoint] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(checkpoint_from_dict(json.loads(line)))
        except json.JSONDecodeError:
            raise AuditError(f"{path}:{number}: not valid json") from None
        except AuditError as exc:
            raise AuditError(f"{path}:{number}: {exc}") from None
    return out
