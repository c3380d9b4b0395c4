"""Assemble the gateway's parts from ``Settings``: stores, vault, audit log, policy, upstreams.

The CLI reads the environment (the master key) and hands it here; nothing below reads it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mcp_gateway.app.monitoring import AlertBoard, add_services, approval_notifier
from mcp_gateway.app.policy_history import open_policy_history
from mcp_gateway.app.quality import open_incidents
from mcp_gateway.app.toolsets import build_toolsets, builtin_tool_names
from mcp_gateway.approvals.gate import StoreApprovalGate
from mcp_gateway.approvals.sql import open_approval_store
from mcp_gateway.approvals.store import ApprovalStore
from mcp_gateway.audit.checkpointer import Checkpointer
from mcp_gateway.audit.flood import FailureRecorder
from mcp_gateway.audit.inherit import check_inherited
from mcp_gateway.audit.keys import (
    PUBLIC_KEY_FILE,
    AuditKeys,
    ensure_audit_keys,
    export_public_key,
)
from mcp_gateway.audit.log import AuditLog
from mcp_gateway.audit.seal import Sealer
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.config import PostgresStore, Settings, SQLiteAuditStore, SQLiteStore
from mcp_gateway.connectors.mcp.upstream import UpstreamConnection, required_secrets
from mcp_gateway.connectors.orchestrators.idempotency import SQLIdempotencyStore
from mcp_gateway.core.gateway import Gateway
from mcp_gateway.core.request_state import open_request_states
from mcp_gateway.core.state import PolicyHolder, SecretsView
from mcp_gateway.errors import ConfigError, GatewayError
from mcp_gateway.identity.admin_tokens import AdminTokens, PostgresAdminStore, SQLiteAdminStore
from mcp_gateway.identity.agents import AgentTokens, PostgresAgentStore, SQLiteAgentStore, TokenStore
from mcp_gateway.pins.gate import PinGuard
from mcp_gateway.pins.store import SQLitePinStore, SQLPinStore
from mcp_gateway.quotas.gate import StoreQuotaGate
from mcp_gateway.quotas.store import QuotaStore, open_quota_store
from mcp_gateway.telemetry import install_log_redaction
from mcp_gateway.tools.base import Toolset
from mcp_gateway.types import AuditSink, SecretStore
from mcp_gateway.vault.crypto import Keyring
from mcp_gateway.vault.keys import load_keyring
from mcp_gateway.vault.service import Vault
from mcp_gateway.vault.store import SQLiteSecretStore

logger = logging.getLogger(__name__)
_Tokens = TypeVar("_Tokens", bound=TokenStore)


def open_audit_sink(
    settings: Settings, *, sealer: Sealer | None = None, read_only: bool = False
) -> AuditSink:
    """The configured audit store.

    Args:
        settings: validated settings.
        sealer: seals each batch written (None: records written stand unauthenticated).
        read_only: for commands that only read: never create the store, its folder or its tables.

    Raises:
        AuditError: the store cannot be opened (read-only: it does not exist, naming where).
    """
    store = settings.audit
    if isinstance(store, PostgresStore):
        # psycopg is an optional extra; import only when PostgreSQL is configured.
        from mcp_gateway.audit.postgres import PostgresAuditSink

        return PostgresAuditSink(store.dsn, schema=store.schema_name, sealer=sealer, create=not read_only)
    path = settings.data_path(store.path)
    if read_only:
        return SQLiteAuditSink(path, read_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return SQLiteAuditSink(path, sealer=sealer)


def open_audit_writer(
    settings: Settings, *, master_key_env: str | None, warn_unsealed: bool = True
) -> AuditSink:
    """The audit store for a CLI command that writes records, sealed with the vault's seal key.

    The audit keys are created if the vault has none yet (``vault init``, then the first command).
    Without the master key the records are written unsealed, with a warning: ``audit verify`` and the
    next gateway to start report them as unauthenticated.
    """
    sealer = None
    secret_store = open_secret_store(settings)
    try:
        vault = Vault(secret_store, read_keyring(settings, master_key_env=master_key_env), check_keys=True)
        if vault.sealed and warn_unsealed:
            logger.warning(
                "the vault is sealed: this command's audit records carry no seal and will be reported as"
                " unauthenticated (set MCP_GATEWAY_MASTER_KEY or keep the key file)"
            )
        elif not vault.sealed:
            try:
                sealer = Sealer(ensure_audit_keys(vault).seal_key)
            except GatewayError as exc:
                logger.warning("audit records written without a seal: %s", exc)
    finally:
        # Only the seal key is needed from here on: leave no vault connection open behind the command.
        close = getattr(secret_store, "close", None)
        if close is not None:
            close()
    return open_audit_sink(settings, sealer=sealer)


def open_secret_store(settings: Settings) -> SecretStore:
    store = settings.vault.store
    if isinstance(store, PostgresStore):
        from mcp_gateway.vault.store import PostgresSecretStore

        return PostgresSecretStore(store.dsn, schema=store.schema_name)
    path = settings.data_path(store.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return SQLiteSecretStore(path)


def vault_secret_names(settings: Settings) -> list[str] | None:
    """The names in the configured vault store, read-only (nothing created, no key needed); None
    when the store does not exist yet.

    Raises:
        VaultError: the store exists but cannot be read.
    """
    from mcp_gateway.vault.store import stored_names_postgres, stored_names_sqlite

    store = settings.vault.store
    if isinstance(store, PostgresStore):
        return stored_names_postgres(store.dsn, store.schema_name)
    return stored_names_sqlite(settings.data_path(store.path))


def key_file_path(settings: Settings) -> Path | None:
    key_file = settings.vault.key_file
    return settings.data_path(key_file) if key_file is not None else None


def read_keyring(settings: Settings, *, master_key_env: str | None) -> Keyring | None:
    """The master keys from the env value and/or the key file; None when neither exists."""
    key_file = key_file_path(settings)
    return load_keyring(
        env_value=master_key_env,
        key_file=key_file if key_file is not None and key_file.exists() else None,
    )


def open_vault(settings: Settings, *, master_key_env: str | None) -> Vault:
    """Open the vault; sealed when neither the env key nor an existing key file is present, or when
    the key given is not this vault's (its key check fails: logged once, see ``vault/keycheck.py``)."""
    keyring = read_keyring(settings, master_key_env=master_key_env)
    return Vault(open_secret_store(settings), keyring, check_keys=True)


def open_agents(settings: Settings, *, read_only: bool = False) -> AgentTokens:
    """The agent-token store (``agents:``, or the top-level ``store:``).

    Args:
        read_only: for commands that only read: a PostgreSQL schema never set up is refused, not created.

    Raises:
        StoreError: it cannot be opened (read-only: it was never set up).
    """
    return _token_store(settings, settings.agents, SQLiteAgentStore, PostgresAgentStore, read_only)


def open_admins(settings: Settings, *, read_only: bool = False) -> AdminTokens:
    """The admin-token store (``admins:``, or the top-level ``store:``), shared by ``mcp-gateway admin``,
    ``approvals approve/deny`` and every running gateway (see ``open_agents``)."""
    return _token_store(settings, settings.admins, SQLiteAdminStore, PostgresAdminStore, read_only)


def _token_store(
    settings: Settings,
    store: SQLiteStore | PostgresStore,
    on_sqlite: Callable[[Path], _Tokens],
    on_postgres: Callable[..., _Tokens],
    read_only: bool,
) -> _Tokens:
    if isinstance(store, PostgresStore):
        return on_postgres(store.dsn, store.schema_name, create=not read_only)
    return on_sqlite(settings.data_path(store.path))


def sqlite_store_path(settings: Settings, name: str) -> Path | None:
    """The SQLite file of store ``name`` (``agents``, ``admins``, ``pinning``), None on PostgreSQL:
    what a read-only command checks for before it opens (and so creates) one."""
    if name == "pinning":
        pinning = settings.pinning
        return settings.data_path(pinning.path) if pinning.backend == "sqlite" else None
    store = settings.agents if name == "agents" else settings.admins
    return settings.data_path(store.path) if isinstance(store, SQLiteStore) else None


def public_key_path(settings: Settings) -> Path:
    """Where the audit-signing public keys are exported (``audit-signing.pub`` in the data dir)."""
    return settings.data_dir / PUBLIC_KEY_FILE


def checkpoint_mirror_path(settings: Settings) -> Path | None:
    """The append-only checkpoint mirror file, or None when ``audit.checkpoint_file`` is null."""
    mirror = settings.audit.checkpoint_file
    return settings.data_path(mirror) if mirror is not None else None


def open_audit_keys(settings: Settings, vault: Vault) -> AuditKeys | None:
    """The audit signing and HMAC keys (created on first start), with the public key exported.

    None, with a warning logged, when the vault is sealed or the keys cannot be had: the gateway
    still runs and audits, but signs no checkpoints and withholds sensitive values without a MAC.
    """
    if vault.sealed:
        logger.warning(
            "vault is sealed: audit checkpoints are skipped and sensitive arguments are recorded"
            " without an hmac"
        )
        return None
    try:
        keys = ensure_audit_keys(vault)
        export_public_key(public_key_path(settings), keys.public_key)
    except GatewayError as exc:
        logger.error("audit keys unavailable, audit checkpoints are skipped: %s", exc)
        return None
    return keys


def open_pin_store(settings: Settings, *, read_only: bool = False) -> SQLPinStore:
    """The tool-pin store (shared by the running gateways and ``mcp-gateway upstreams``).

    Raises:
        StoreError: it cannot be opened (read-only: a PostgreSQL schema never set up).
    """
    pinning = settings.pinning
    if pinning.backend == "postgres" and pinning.dsn is not None:
        from mcp_gateway.pins.store import PostgresPinStore

        return PostgresPinStore(pinning.dsn, pinning.schema_name, create=not read_only)
    return SQLitePinStore(settings.data_path(pinning.path))


def open_idempotency_store(settings: Settings, clock: Callable[[], float] = time.time) -> SQLIdempotencyStore:
    """The ``ops`` rerun idempotency keys: PostgreSQL when ``store:`` is set (replicas share the keys),
    else SQLite in the data dir.

    Raises:
        StoreError, ConfigError: it cannot be opened.
    """
    if settings.store is not None:
        from mcp_gateway.connectors.orchestrators.idempotency import PostgresIdempotencyStore

        return PostgresIdempotencyStore(settings.store.url, settings.store.schema_name, clock)
    from mcp_gateway.connectors.orchestrators.idempotency import IdempotencyStore
    from mcp_gateway.tools.ops import STORE_FILE

    return IdempotencyStore(settings.data_dir / STORE_FILE, clock)


@dataclass
class Runtime:
    """Everything a running gateway holds; ``close`` releases the stores."""

    settings: Settings
    gateway: Gateway
    agents: AgentTokens
    sink: AuditSink
    pins: SQLPinStore | None = None
    approvals: ApprovalStore | None = None
    quotas: QuotaStore | None = None
    admins: AdminTokens | None = None
    alerts: AlertBoard | None = None

    def close(self) -> None:
        self.sink.close()
        self.agents.close()
        self.gateway.policy.close()
        stores = (self.pins, self.approvals, self.quotas, self.admins, self.gateway.states.spent)
        for store in (*stores, self.gateway.incidents):
            if store is not None:
                store.close()
        self.gateway.secrets.vault.close()


def build_runtime(
    settings: Settings,
    *,
    master_key_env: str | None,
    sink: AuditSink | None = None,
    toolsets: Sequence[Toolset] = (),
) -> Runtime:
    """Build a gateway from settings.

    Args:
        settings: validated settings.
        master_key_env: the value of ``MCP_GATEWAY_MASTER_KEY`` if set.
        sink: an audit sink to use instead of the configured one (tests inject failing ones).
        toolsets: built-in toolsets to offer besides those the settings configure.

    Raises:
        PolicyLoadError: the policy does not load (a gateway does not start on a bad policy).
        ConfigError, VaultError: the stores cannot be opened.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    history = open_policy_history(settings)  # each load, at start and on every reload
    policy = PolicyHolder.load(settings.policies, builtin_tools=builtin_tool_names(), history=history)
    vault = open_vault(settings, master_key_env=master_key_env)
    secrets = SecretsView(vault, reload_keys=lambda: read_keyring(settings, master_key_env=master_key_env))
    keys = open_audit_keys(settings, vault)
    sealer = Sealer(keys.seal_key) if keys is not None else None
    sink = sink if sink is not None else open_audit_sink(settings, sealer=sealer)
    checkpointer = None
    alarm = None
    if keys is not None and sealer is not None:
        mirror = checkpoint_mirror_path(settings)
        # Before this process writes (or signs) anything over what it inherits.
        alarm = check_inherited(sink, sealer, keys.public_key, mirror)
        checkpointer = Checkpointer(
            sink,
            keys.signing_key,
            every=settings.audit.checkpoint_every,
            interval=settings.audit.checkpoint_seconds,
            mirror=mirror,
        )
    on_loop = isinstance(settings.audit, SQLiteAuditStore) and settings.audit.commit_on_loop
    audit = AuditLog(sink, checkpointer=checkpointer, commit_on_loop=on_loop)
    audit.alarm = alarm
    audit.failures = FailureRecorder(
        audit.append_many,
        threshold=settings.audit.auth_failure_threshold,
        window=settings.audit.auth_failure_window_seconds,
    )
    pin_store = open_pin_store(settings)
    pinning = settings.pinning
    pins = PinGuard(
        pin_store,
        audit,
        secrets.redactor,
        new_tools=pinning.new_tools,
        new_resources=pinning.new_resources,
        recheck_seconds=pinning.recheck_seconds,
    )
    upstreams = {
        name: UpstreamConnection(
            name,
            config,
            secrets.resolve,
            secrets.redactor,
            pins=pins,
            relist_seconds=settings.pinning.relist_seconds,
        )
        for name, config in settings.upstreams.items()
    }
    needs = {name: required_secrets(up.config) for name, up in upstreams.items()}

    def reconnect_users(changed: set[str]) -> None:
        for name, upstream in upstreams.items():
            if needs[name] & changed:
                upstream.request_reconnect()

    secrets.on_change = reconnect_users
    install_log_redaction(secrets)
    incidents = open_incidents(settings)
    all_toolsets = {
        toolset.name: toolset
        for toolset in (
            *build_toolsets(
                settings, secrets.resolve, lambda clock: open_idempotency_store(settings, clock), incidents
            ),
            *toolsets,
        )
    }
    clash = set(all_toolsets) & set(upstreams)
    clash |= {up.name for up in upstreams.values() if up.prefix in {f"{name}." for name in all_toolsets}}
    if clash:
        raise ConfigError(f"upstream(s) {sorted(clash)} collide with built-in toolsets (name or prefix)")
    approval_store = open_approval_store(settings.approvals, settings.data_dir)
    notifier = approval_notifier(settings, secrets)
    quota_store = open_quota_store(settings.quotas, settings.data_dir)
    gateway = Gateway(
        quotas=StoreQuotaGate(quota_store),
        approvals=StoreApprovalGate(
            approval_store, default_ttl=settings.approvals.ttl_seconds, notifier=notifier
        ),
        policy=policy,
        secrets=secrets,
        audit=audit,
        upstreams=upstreams,
        limits=settings.limits,
        pins=pins,
        toolsets=all_toolsets,
        audit_hmac_key=keys.hmac_key if keys is not None else None,
        states=open_request_states(vault, settings.data_dir, settings.store),
        incidents=incidents,
    )
    board = add_services(settings, gateway, sink, approval_store, incidents, notifier)
    return Runtime(
        settings,
        gateway,
        open_agents(settings),
        sink,
        pin_store,
        approvals=approval_store,
        quotas=quota_store,
        admins=open_admins(settings),
        alerts=board,
    )
