"""The ``monitors:`` section of ``gateway.yaml``: quality checks the gateway runs on a schedule.

```yaml
monitors:
  revenue_currency:
    table: lake.finance.revenue        # <warehouse>.<namespace>.<table>, production
    checks:                            # the same checks as switch-in gates (named metrics from policy)
      - {metric: named, name: non_usd_rows, max: 0}
    every_seconds: 300
    job: nightly_revenue               # optional: the job whose failure context lists the incident
```
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mcp_gateway.connectors.warehouse.base import Check


class MonitorSettings(BaseModel):
    """One monitor.

    Attributes:
        table: the production table it measures.
        checks: each must pass; one failing opens (or adds to) an incident.
        every_seconds: the schedule (the first run is at start).
        job: a configured job whose ``get_failure_context`` shows this monitor's incidents.
        notify: post new and recovered incidents to ``approvals.webhook_url``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str = Field(pattern=r"^[a-z][a-z0-9_-]*\.[^.\s]+(\.[^.\s]+)*$")
    checks: tuple[Check, ...] = Field(min_length=1)
    every_seconds: float = Field(default=300.0, ge=1.0, le=86_400.0)
    job: str | None = None
    notify: bool = True
