"""A credential held in a file of its own (a Docker secret under ``/run/secrets``, a Kubernetes secret
volume): read it, refusing a file other users could open.

The file may be readable by its group (a Kubernetes secret volume with ``fsGroup``), never by others;
it must be a regular file (a FIFO put in its place is refused instead of hanging a start). Messages
name the file and its mode, never its content.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mcp_gateway.errors import GatewayError

__all__ = ["SecretFileError", "read_secret_file"]


class SecretFileError(GatewayError):
    """The secret file cannot be used (unreadable, not a regular file, open to others, empty)."""


def read_secret_file(path: str | os.PathLike[str], what: str) -> str:
    """The text in ``path``, surrounding whitespace removed.

    Args:
        path: the file.
        what: how messages name it (``MCP_GATEWAY_MASTER_KEY_FILE``, ``quotas.redis_password_file``).

    Raises:
        SecretFileError: see the module doc.
    """
    named = f"{what} `{Path(path)}`"
    try:
        # O_NONBLOCK: a FIFO put in the file's place is refused below instead of hanging the start.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as fh:
            # fstat the open file, not the path, so the file checked is the file read.
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise SecretFileError(f"{named} is not a regular file")
            if st.st_mode & 0o007:
                raise SecretFileError(
                    f"{named} has mode {stat.S_IMODE(st.st_mode):04o}: other users may open it (at most 0640)"
                )
            data = fh.read()
    except OSError as exc:
        raise SecretFileError(f"cannot read {named}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretFileError(f"{named} is not text") from None
    if not text:
        raise SecretFileError(f"{named} is empty")
    return text
