"""The ``alerts:`` section of ``gateway.yaml``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class AlertSettings(BaseModel):
    """Alert rules and where alerts go (none by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)
