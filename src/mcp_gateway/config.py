"""Gateway settings: the ``gateway.yaml`` model, read once at start and passed down.

Relative paths in the file resolve against the file's directory. Secret values never appear here:
upstream ``env`` and ``headers`` values may contain ``secret://NAME`` references that the gateway
resolves from the vault when it connects.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from mcp_gateway.alerts.config import AlertSettings
from mcp_gateway.approvals.settings import ApprovalSettings
from mcp_gateway.config_errors import SHOWN_PROBLEMS, location
from mcp_gateway.config_errors import error_text as error_text
from mcp_gateway.config_errors import scalar_values as scalar_values
from mcp_gateway.connectors.mcp.config import Upstream
from mcp_gateway.connectors.orchestrators.config import JobSettings, OrchestratorSettings
from mcp_gateway.connectors.salesforce.config import SalesforceOrgSettings
from mcp_gateway.connectors.siem.config import SiemSettings
from mcp_gateway.connectors.warehouse.config import WarehouseSettings
from mcp_gateway.core.limits import LimitSettings
from mcp_gateway.errors import ConfigError
from mcp_gateway.identity.console import ConsoleSettings
from mcp_gateway.identity.settings import OAuthSettings
from mcp_gateway.monitors.config import MonitorSettings
from mcp_gateway.pins.settings import PinningSettings
from mcp_gateway.quotas.settings import QuotaSettings
from mcp_gateway.telemetry import TelemetrySettings

UPSTREAM_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class _Model(BaseModel):
    # A refused value may be an inline credential: errors name the key, never echo the input.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class ServerSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = None
    """The URL agents use (the OAuth resource identifier); defaults to ``http://HOST:PORT``."""
    allowed_hosts: tuple[str, ...] = ()
    """Extra ``Host`` values accepted besides loopback (``host:*`` allows any port)."""
    allowed_origins: tuple[str, ...] = ()
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    watch_policy: bool = True
    """Reload policy when its files change (SIGHUP always reloads)."""
    fast_path: bool = True
    """No effect: each protocol era has one path, the gateway's own dispatch (``http/modern.py``,
    ``http/legacy.py``); the key is still accepted so existing files load."""
    keep_alive_seconds: int = Field(default=5, ge=1, le=3600)
    """How long an idle HTTP keep-alive connection stays open. Behind a load balancer that pools
    connections, set it above the balancer's idle timeout, so the balancer closes first and never
    sends a request down a connection the gateway is closing."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks (``10.0.0.0/8``) of reverse proxies whose ``X-Forwarded-For`` and
    ``X-Forwarded-Proto`` are believed: the client address audit records carry. Empty (the default):
    forwarded headers are ignored from everyone, loopback included."""

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies entry `{entry}` is not an IP address or network") from None
        return value


class SQLiteStore(_Model):
    backend: Literal["sqlite"] = "sqlite"
    path: Path


class PostgresStore(_Model):
    backend: Literal["postgres"]
    dsn: str
    schema_name: str = Field(default="mcp_gateway", alias="schema")


Store = Annotated[SQLiteStore | PostgresStore, Field(discriminator="backend")]


class SharedStore(_Model):
    """``store:``: one PostgreSQL database for every store that names no backend of its own.

    Either a DSN string (``store: postgresql://host:5432/db``) or ``{url: ..., schema: ...}``.
    """

    url: str = Field(min_length=1)
    schema_name: str = Field(default="mcp_gateway", alias="schema", min_length=1, max_length=63)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        scheme, sep, _ = value.partition("://")
        if sep and scheme not in ("postgresql", "postgres"):
            raise ValueError("store: url must be a postgresql:// URL or a libpq `key=value` string")
        return value


def _with_shared_store(data: dict[str, Any]) -> dict[str, Any]:
    """Point every store section that names no backend (nor a SQLite ``path``) at ``store:``.

    A section's own keys win, so ``audit: {schema: audit}`` keeps the shared DSN in another schema and
    ``approvals: {store: sqlite}`` stays on SQLite.
    """
    shared = data.get("store")
    url: Any
    schema: Any
    if isinstance(shared, str):
        url, schema = shared, "mcp_gateway"
    elif isinstance(shared, dict):
        url, schema = shared.get("url"), shared.get("schema", "mcp_gateway")
    elif isinstance(shared, SharedStore):
        url, schema = shared.url, shared.schema_name
    else:
        return data
    if not isinstance(url, str) or not url:
        return data  # the `store` field itself reports it
    data = dict(data)
    sections = {
        "audit": ({"backend", "path"}, {"backend": "postgres", "dsn": url, "schema": schema}),
        "agents": ({"backend", "path"}, {"backend": "postgres", "dsn": url, "schema": schema}),
        "admins": ({"backend", "path"}, {"backend": "postgres", "dsn": url, "schema": schema}),
        "pinning": ({"backend", "path"}, {"backend": "postgres", "dsn": url, "schema": schema}),
        "approvals": ({"store", "path"}, {"store": "postgres", "dsn": url, "schema": schema}),
    }
    for key, (explicit, postgres) in sections.items():
        section = data.get(key)
        if section is None:
            data[key] = postgres
        elif isinstance(section, dict) and not explicit & section.keys():
            data[key] = {**postgres, **section}
    vault = data.get("vault")
    if vault is None or (isinstance(vault, dict) and "store" not in vault):
        data["vault"] = {**(vault or {}), "store": {"backend": "postgres", "dsn": url, "schema": schema}}
    return data


class _AuditOptions(_Model):
    checkpoint_every: int = Field(default=1000, ge=0)
    """Sign a checkpoint after each batch that crosses a multiple of this many records (0: only at
    shutdown); one is always signed at a clean shutdown."""
    checkpoint_seconds: float = Field(default=60.0, ge=0)
    """Also sign a checkpoint this often while there are new records (0: never by time), so records
    cannot be removed unseen for longer than this; one is always signed at a clean shutdown."""
    auth_failure_threshold: int = Field(default=20, ge=1)
    """Authentication failures per client address and window audited one by one; past it they are
    counted, and one ``auth_failure_summary`` record per address and window gives the count."""
    auth_failure_window_seconds: float = Field(default=60.0, gt=0)
    checkpoint_file: Path | None = Path("checkpoints.jsonl")
    """The append-only mirror of the signed checkpoints (relative to ``data_dir``); null: none."""


class SQLiteAuditStore(SQLiteStore, _AuditOptions):
    path: Path = Path("audit.db")
    commit_on_loop: bool = True
    """Commit on the event loop when the store is free (no thread hand-off); a few commits slower
    than ``AuditLog.LOOP_BUDGET`` close together send the next ones to a worker thread for a while."""


class PostgresAuditStore(PostgresStore, _AuditOptions):
    pass


def _audit_backend(value: Any) -> str:
    # `audit: {checkpoint_every: 100}` alone means the default store: sqlite unless said otherwise.
    backend = value.get("backend", "sqlite") if isinstance(value, dict) else getattr(value, "backend", "")
    return str(backend)


AuditStore = Annotated[
    Annotated[SQLiteAuditStore, Tag("sqlite")] | Annotated[PostgresAuditStore, Tag("postgres")],
    Discriminator(_audit_backend),
]


class VaultSettings(_Model):
    store: Store = SQLiteStore(path=Path("vault.db"))
    key_file: Path | None = Path("master.key")


class Settings(_Model):
    """Everything the gateway needs to start."""

    data_dir: Path = Path(".gateway")
    policies: Path = Path("policies")
    server: ServerSettings = ServerSettings()
    audit: AuditStore = SQLiteAuditStore(path=Path("audit.db"))
    store: SharedStore | None = None
    """One PostgreSQL database for every store section that names no backend of its own (audit,
    vault, approvals, agents, admins, pinning, and the ``ops`` rerun idempotency keys); unset: SQLite
    files in ``data_dir``."""
    agents: Store = SQLiteStore(path=Path("agents.db"))
    admins: Store = SQLiteStore(path=Path("admins.db"))
    """Admin API tokens (``mcp-gateway admin``)."""
    vault: VaultSettings = VaultSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    pinning: PinningSettings = PinningSettings()
    limits: LimitSettings = LimitSettings()
    upstreams: dict[str, Upstream] = Field(default_factory=dict)
    oauth: OAuthSettings | None = None
    approvals: ApprovalSettings = ApprovalSettings()
    quotas: QuotaSettings = QuotaSettings()
    warehouses: dict[str, WarehouseSettings] = Field(default_factory=dict)
    """Tables for the ``data`` toolset; the name is the first part of every table name."""
    orchestrators: dict[str, OrchestratorSettings] = Field(default_factory=dict)
    jobs: dict[str, JobSettings] = Field(default_factory=dict)
    """Jobs agents may name in ``ops.rerun_job``: orchestrator and the orchestrator's own id."""
    salesforce: dict[str, SalesforceOrgSettings] = Field(default_factory=dict)
    """Salesforce orgs for the ``salesforce`` toolset, by the name agents pass as ``org``."""
    console: ConsoleSettings = ConsoleSettings()
    siem: SiemSettings = SiemSettings()
    alerts: AlertSettings = AlertSettings()
    monitors: dict[str, MonitorSettings] = Field(default_factory=dict)
    """Quality checks the gateway runs on a schedule; a failing one raises an incident."""

    @field_validator("warehouses", "orchestrators", "salesforce", "monitors")
    @classmethod
    def _section_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not UPSTREAM_NAME.match(name):
                raise ValueError(f"name `{name}` must match {UPSTREAM_NAME.pattern}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _shared_store(cls, data: Any) -> Any:
        return _with_shared_store(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _jobs_name_orchestrators(self) -> Settings:
        for job, spec in self.jobs.items():
            if spec.orchestrator not in self.orchestrators:
                raise ValueError(
                    f"job `{job}` names orchestrator `{spec.orchestrator}`, which is not configured"
                )
        for name, monitor in self.monitors.items():
            if monitor.table.split(".", 1)[0] not in self.warehouses:
                raise ValueError(f"monitor `{name}` measures `{monitor.table}`, in no configured warehouse")
            if monitor.job is not None and monitor.job not in self.jobs:
                raise ValueError(f"monitor `{name}` names job `{monitor.job}`, which is not configured")
        return self

    @field_validator("upstreams")
    @classmethod
    def _upstream_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not UPSTREAM_NAME.match(name):
                raise ValueError(f"upstream name `{name}` must match {UPSTREAM_NAME.pattern}")
        return value

    @property
    def resource_url(self) -> str:
        if self.server.public_url:
            return self.server.public_url.rstrip("/")
        return f"http://{self.server.host}:{self.server.port}"

    def data_path(self, path: Path) -> Path:
        """Resolve a store path against the data directory."""
        return path if path.is_absolute() else self.data_dir / path


def _resolve_relative(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    for key in ("data_dir", "policies"):
        if key in raw and isinstance(raw[key], str) and not Path(raw[key]).is_absolute():
            raw[key] = str(base / raw[key])
    return raw


def load_settings(path: Path | None, **overrides: Any) -> Settings:
    """Read ``gateway.yaml`` (or use defaults when ``path`` is None) and apply overrides.

    Args:
        path: the config file; relative ``data_dir``/``policies`` resolve against its directory.
        overrides: top-level keys that replace the file's values (from CLI flags).

    Raises:
        ConfigError: unreadable file, YAML error or invalid settings, with the location.
    """
    raw: dict[str, Any] = {}
    text = ""
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config `{path}`: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise ConfigError(f"{where}: invalid yaml: {getattr(exc, 'problem', exc)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        raw = _resolve_relative(dict(loaded or {}), path.parent.resolve())
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_input=False)
        values = scalar_values(raw)
        shown = [f"{location(err['loc'])}: {error_text(err, values)}" for err in errors[:SHOWN_PROBLEMS]]
        if len(errors) > SHOWN_PROBLEMS:
            shown.append(f"and {len(errors) - SHOWN_PROBLEMS} more")
        raise ConfigError(f"{path or 'settings'}: {'; '.join(shown)}") from None
    _check_prefixes(settings, path, text if path is not None else "")
    return settings


def _check_prefixes(settings: Settings, path: Path | None, text: str) -> None:
    """Two upstreams offering tools under one prefix would make every such name ambiguous.

    Raises:
        ConfigError: ``file:line`` of the second upstream's ``prefix`` (or its entry).
    """
    seen: dict[str, str] = {}
    for name, upstream in settings.upstreams.items():
        prefix = upstream.prefix if upstream.prefix is not None else f"{name}."
        if prefix in seen:
            where = f"{path}:{_line(text, ('upstreams', name, 'prefix'))}" if path is not None else "settings"
            both = f"upstreams `{seen[prefix]}` and `{name}`"
            raise ConfigError(f"{where}: {both} both offer their tools under prefix `{prefix}`")
        seen[prefix] = name


def _line(text: str, keys: tuple[str, ...]) -> int:
    """The 1-based line of the deepest of ``keys`` found in the YAML ``text`` (1 if none)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return 1
    line = 1
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            break
        match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == key), None)
        if match is None:
            break
        line, node = match[0].start_mark.line + 1, match[1]
    return line
