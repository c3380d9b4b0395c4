"""The ``alerts:`` section of ``gateway.yaml``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class Burst(_Model):
    """``count`` matching records within ``window_seconds`` (per agent, source or tool) raise an alert."""

    count: int = Field(ge=1, le=100_000, strict=True)
    window_seconds: float = Field(gt=0, le=86_400)


class AlertRules(_Model):
    """Which conditions raise an alert; each is off (null) unless set.

    Attributes:
        denial_burst: denied calls per agent (kind ``denied``).
        auth_failures: authentication failures per source address (``auth_failure``,
            ``admin_auth_failure``, and the counts of ``auth_failure_summary``).
        pin_blocks: a tool, resource or prompt definition that changed and was blocked.
        redaction_hits: results in which the redactor replaced a secret, per tool.
        approval_wait_minutes: an approval still pending after this many minutes.
        verify_failed: the chain failed a check (``audit_alarm`` at start; an ``audit_verify`` record
            whose status is not ``ok``).
        chain_stalled_seconds: records older than this that no signed checkpoint covers yet (the
            checkpoint writer stopped), or an audit store that cannot be read.
        monitor_errors: runs of a quality monitor that could not measure its table (``incident``
            records with status ``error``: the warehouse down, the table gone), per monitor.
    """

    denial_burst: Burst | None = None
    auth_failures: Burst | None = None
    pin_blocks: bool = False
    redaction_hits: Burst | None = None
    approval_wait_minutes: float | None = Field(default=None, gt=0, le=10_080)
    verify_failed: bool = False
    chain_stalled_seconds: float | None = Field(default=None, gt=0, le=604_800)
    monitor_errors: Burst | None = None


class AlertSettings(_Model):
    """Alert rules and where alerts go (none by default).

    Attributes:
        rules: the conditions (all off by default).
        webhook_url: a Slack-compatible incoming webhook (``{"text": ...}``); ``secret://NAME`` keeps
            the URL (a credential) in the vault. None: alerts are audited and shown, not sent.
        allow_private_network: let the webhook reach loopback/private addresses (off: SSRF guard).
        timeout_seconds: per webhook attempt (one retry).
        poll_seconds: how often new audit records are read and the timed rules checked.
    """

    rules: AlertRules = AlertRules()
    webhook_url: str | None = None
    allow_private_network: bool = False
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    poll_seconds: float = Field(default=1.0, gt=0, le=60)

    @model_validator(mode="after")
    def _webhook(self) -> AlertSettings:
        if self.webhook_url is not None and not self.webhook_url.startswith(
            ("https://", "http://", "secret://")
        ):
            raise ValueError("alerts: webhook_url must be an http(s) URL or a secret://NAME reference")
        return self

    @property
    def enabled(self) -> bool:
        """Whether any rule is on."""
        return any(value not in (None, False) for value in self.rules.model_dump().values())
