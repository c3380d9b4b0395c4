"""``quotas:`` in gateway.yaml (a model only: importing it opens no store)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator


class QuotaSettings(BaseModel):
    """``quotas:`` in gateway.yaml.

    Attributes:
        store: ``sqlite`` (a file in the data directory) or ``redis`` (replicas share counts).
        path: the SQLite file, relative to ``data_dir``.
        redis_url: the Redis server (``redis://127.0.0.1:6379/0``).
        key_prefix: the Redis key prefix.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: Literal["sqlite", "redis"] = "sqlite"
    path: Path = Path("quotas.db")
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "mcp-gateway:quota:"

    @model_validator(mode="after")
    def _redis_scheme(self) -> QuotaSettings:
        if self.store == "redis" and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("quotas: redis_url must start with redis://, rediss:// or unix://")
        return self
