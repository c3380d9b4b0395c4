"""Audit records of the admin CLI's changes: one durable before the change, one for its outcome.

Token issue/revoke (``tokens.py``) and vault changes (``vault.py``) share this one path: a
``requested`` record is appended (and fsynced) before the store is touched, so a change the audit
cannot record does not happen, and a second record says what happened. Neither may hold a secret.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import Any

from mcp_gateway.audit.seal import VOUCHES_FOR, VOUCHING_KINDS
from mcp_gateway.cli.common import master_key_env
from mcp_gateway.config import Settings
from mcp_gateway.types import AuditEvent

__all__ = ["Recorder", "audit_recorder"]

Recorder = Callable[..., None]
"""``record(status, **detail)``: append one record; raises ``GatewayError`` if it cannot be written."""


def audit_recorder(settings: Settings, kind: str, **base: Any) -> Recorder:
    """A recorder of ``kind`` events carrying ``base`` (plus who ran the command) in every detail.

    Each call opens the configured audit store (``open_audit_writer``: each batch sealed with the
    vault's audit seal key when the vault opens), appends one record durably and closes the store.

    Raises (when called):
        AuditError: the audit store cannot be opened or written.
    """
    from mcp_gateway.app.wiring import open_audit_writer

    fixed = {**base, "by": getpass.getuser(), "via": "cli"}
    # Records this command wrote before the vault had a seal key (``vault init``'s first one): the
    # next sealed record names them, so they stand authenticated by it (``seal.VOUCHES_FOR``).
    unsealed: list[list[Any]] = []

    def record(status: str, **detail: Any) -> None:
        sink = open_audit_writer(
            settings, master_key_env=master_key_env(), warn_unsealed=kind != "vault_init"
        )
        try:
            sealed = getattr(sink, "sealer", None) is not None
            extra = {VOUCHES_FOR: list(unsealed)} if sealed and unsealed and kind in VOUCHING_KINDS else {}
            (written,) = sink.append(
                [AuditEvent(kind=kind, status=status, detail={**fixed, **detail, **extra})]
            )
        finally:
            sink.close()
        if sealed:
            unsealed.clear()
        else:
            unsealed.append([written.seq, written.hash])

    return record
