"""``pinning:`` in gateway.yaml (a model only: importing it opens no store)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Model(BaseModel):
    # A refused value may be an inline credential: errors name the key, never echo the input.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class PinningSettings(_Model):
    """Definition pinning against rug pulls: tools, prompts, resources (see ``pins/gate.py``)."""

    path: Path = Path("pins.db")
    """The SQLite pin store, relative to ``data_dir``."""
    backend: Literal["sqlite", "postgres"] = "sqlite"
    """``postgres``: pins in the ``dsn``'s ``schema``, shared by replicas (the top-level ``store:``
    sets all three when the section names no backend)."""
    dsn: str | None = None
    schema_name: str = Field(default="mcp_gateway", alias="schema")
    new_tools: Literal["auto", "approve"] = "approve"
    """A tool, prompt or resource template that appears on an upstream after its first listing:
    ``approve`` blocks it until an admin approves it; ``auto`` pins it on first sight (and offers it at
    once to every agent whose grant pattern matches it)."""
    new_resources: Literal["auto", "approve"] = "auto"
    """The same for concrete resources, which come and go with the data behind them; a changed
    resource definition is blocked either way."""
    relist_seconds: float | None = Field(default=300.0, gt=0)
    """Re-list every upstream's tools, prompts and resources this often (besides on change
    notifications); null: never."""
    recheck_seconds: float | None = Field(default=5.0, ge=0)
    """A call to an upstream item whose listing was reviewed longer ago than this re-lists that
    upstream first (one re-list shared by concurrent calls); 0: before every call; null: never."""

    @model_validator(mode="after")
    def _dsn_for_postgres(self) -> PinningSettings:
        if self.backend == "postgres" and not self.dsn:
            raise ValueError("pinning: backend `postgres` needs a `dsn`")
        return self
