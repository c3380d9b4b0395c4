"""``quotas:`` in gateway.yaml (a model only: importing it opens no store)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, model_validator


class QuotaSettings(BaseModel):
    """``quotas:`` in gateway.yaml.

    Attributes:
        store: ``sqlite`` (a file in the data directory) or ``redis`` (replicas share counts).
        path: the SQLite file, relative to ``data_dir``.
        redis_url: the Redis server (``redis://127.0.0.1:6379/0``; ``rediss://`` for TLS). It may
            name a user (``redis://gateway@redis:6379/0``, an ACL user); the password belongs in
            ``redis_password_file``.
        redis_password_file: a file holding the Redis password (a container secret, such as
            ``/run/secrets/redis_password``; relative to ``data_dir``), read when the store opens. It
            must be a regular file no other user may open (at most 0640, as the master key file).
        key_prefix: the Redis key prefix.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: Literal["sqlite", "redis"] = "sqlite"
    path: Path = Path("quotas.db")
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password_file: Path | None = None
    key_prefix: str = "mcp-gateway:quota:"

    @model_validator(mode="after")
    def _redis_scheme(self) -> QuotaSettings:
        if self.store == "redis" and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("quotas: redis_url must start with redis://, rediss:// or unix://")
        if self.redis_password_file is not None:
            try:
                inline = urlsplit(self.redis_url).password is not None
            except ValueError:
                inline = False
            if inline:
                # Not echoed: the URL holds the password.
                raise ValueError(
                    "quotas: redis_url holds a password and redis_password_file is set: keep the"
                    " password in the file only"
                )
        return self
