"""The ``console:`` section of ``gateway.yaml``: who may use the security console, in which role."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConsoleSettings(BaseModel):
    """The web console for people (off by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    enabled: bool = False
