"""The ``console:`` section of ``gateway.yaml``: who may use the security console, in which role."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ConsoleRole = Literal["viewer", "approver", "admin"]
"""What a person may do in the console: ``viewer`` reads every page; ``approver`` also decides
approvals; ``admin`` also revokes agent tokens, approves pinned definitions and runs verify."""

ROLE_RANK: dict[str, int] = {"viewer": 0, "approver": 1, "admin": 2}


class ConsoleSettings(BaseModel):
    """The web console for people (off by default).

    Attributes:
        enabled: serve the console.
        path: where it is served on the gateway's port (``/console``).
        roles: person → role. A person is the name of an admin token (``mcp-gateway admin create
            NAME``) or an OAuth token's subject (``sub``); a person not listed cannot log in.
        session_seconds: how long a login lasts (no sliding renewal).
        max_sessions: live sessions kept at once (the oldest is dropped past it). Sessions live in
            ``console-sessions.db`` in the data dir, or in the shared ``store:`` schema when it is set,
            so they survive a restart and hold on every replica.
        oauth_audience: the ``aud`` a person's identity-provider token must carry to log in; unset:
            the ``/mcp`` resource's audience (``oauth.audience``, else ``<public_url>/mcp``). A separate
            value keeps console tokens and agent tokens apart: neither works at the other's door.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    enabled: bool = False
    path: str = Field(default="/console", pattern=r"^/[a-z0-9][a-z0-9/_-]*[a-z0-9]$")
    roles: dict[str, ConsoleRole] = Field(default_factory=dict)
    session_seconds: int = Field(default=8 * 3600, ge=60, le=7 * 24 * 3600)
    max_sessions: int = Field(default=1000, ge=1, le=100_000)
    oauth_audience: str | None = Field(default=None, min_length=1, max_length=2048)

    @field_validator("path")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        first = value.split("/")[1]
        if first in {"mcp", "admin", "healthz", "readyz", ".well-known"}:
            raise ValueError(f"`{value}` is taken by the gateway's own routes")
        return value
