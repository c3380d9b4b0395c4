"""Gateway settings: the ``gateway.yaml`` model, read once at start and passed down.

Relative paths in the file resolve against the file's directory. Secret values never appear here:
upstream ``env`` and ``headers`` values may contain ``secret://NAME`` references that the gateway
resolves from the vault when it connects.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mcp_gateway.errors import ConfigError

SECRET_REF = re.compile(r"secret://([A-Za-z0-9_.-]{1,128})")
UPSTREAM_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class SQLiteStore(_Model):
    backend: Literal["sqlite"] = "sqlite"
    path: Path


class PostgresStore(_Model):
    backend: Literal["postgres"]
    dsn: str
    schema_name: str = Field(default="mcp_gateway", alias="schema")


Store = Annotated[SQLiteStore | PostgresStore, Field(discriminator="backend")]


class VaultSettings(_Model):
    store: Store = SQLiteStore(path=Path("vault.db"))
    key_file: Path | None = Path("master.key")


class TelemetrySettings(_Model):
    exporter: Literal["none", "console", "otlp"] = "none"
    endpoint: str | None = None
    """OTLP/HTTP traces endpoint, e.g. ``http://127.0.0.1:4318/v1/traces``."""
    log_level: str = "INFO"


class StdioUpstream(_Model):
    transport: Literal["stdio"]
    command: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    cwd: Path | None = None
    timeout_seconds: float = Field(default=60.0, gt=0)


class HttpUpstream(_Model):
    transport: Literal["http"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=60.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return value


Upstream = Annotated[StdioUpstream | HttpUpstream, Field(discriminator="transport")]


class Settings(_Model):
    """Everything the gateway needs to start."""

    data_dir: Path = Path(".gateway")
    policies: Path = Path("policies")
    server: ServerSettings = ServerSettings()
    audit: Store = SQLiteStore(path=Path("audit.db"))
    agents: Store = SQLiteStore(path=Path("agents.db"))
    vault: VaultSettings = VaultSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    upstreams: dict[str, Upstream] = Field(default_factory=dict)

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


def secret_refs(value: str) -> list[str]:
    """Names of the ``secret://NAME`` references inside ``value``."""
    return SECRET_REF.findall(value)


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
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors(include_input=False)
        )
        raise ConfigError(f"{path or 'settings'}: {problems}") from None
