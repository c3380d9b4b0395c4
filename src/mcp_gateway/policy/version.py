"""The version of a loaded policy: a short content hash, the same on every replica that loads the same files.

Replicas behind one load balancer each watch the policy directory (a shared volume or a ConfigMap)
and reload on their own; the version is how an operator (``/readyz`` for admins, the
``policy_reload`` audit record) sees that every replica serves the same policy. No I/O here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import PurePath

__all__ = ["VERSION_LENGTH", "policy_version"]

VERSION_LENGTH = 12
"""Hex digits of the policy version: 48 bits, plenty to tell policies apart, short enough to read."""


def policy_version(sources: Iterable[tuple[str, str]]) -> str:
    """The version of a policy: SHA-256 over each file's name and text, in load order, shortened.

    A file is named by its base name, not its path, so replicas that mount one policy directory at
    different paths (a ConfigMap) agree on the version; content alone decides it, so a reload of
    unchanged files keeps it and any edit changes it.

    Args:
        sources: ``(filename, text)`` of each policy file, in the order ``load_policy`` merges them.
    """
    digest = hashlib.sha256()
    for filename, text in sources:
        for part in (PurePath(filename).name.encode("utf-8"), text.encode("utf-8")):
            # Length-prefixed, so no two different file sets hash the same bytes.
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()[:VERSION_LENGTH]
