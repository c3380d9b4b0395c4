"""The ``siem:`` section of ``gateway.yaml``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SiemSettings(BaseModel):
    """Where audit records are streamed (none by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)
