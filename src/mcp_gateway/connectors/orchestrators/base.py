"""The orchestrator adapter Protocol that ``rerun_job`` and ``get_job_status`` drive.

A *job* is the gateway's name for something an orchestrator runs (a Prefect deployment, an Airflow
DAG, a dbt Cloud job, a Dagster job); config maps each job name to its orchestrator and native id.

Errors (all ``OrchestratorError``, a ``GatewayError``; messages carry no credentials):

    OrchestratorError
    ├── JobNotFound        the orchestrator does not know the job / run
    ├── RunConflict        the run cannot be retried in its current state (e.g. still running)
    └── OrchestratorUnavailable   network failure, 5xx, timeout, or an answer that is not the documented shape
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from mcp_gateway.errors import GatewayError

RunState = Literal["pending", "running", "success", "failed", "cancelled", "unknown"]
RerunMode = Literal["failed_only", "full"]


class OrchestratorError(GatewayError):
    """An orchestrator refused or failed a request."""


class JobNotFound(OrchestratorError):
    """No such job or run at the orchestrator."""


class RunConflict(OrchestratorError):
    """The run is in a state that does not allow this request."""


class OrchestratorUnavailable(OrchestratorError):
    """The orchestrator could not be reached or answered garbage."""


@dataclass(frozen=True)
class RunInfo:
    """One run of a job, normalised across orchestrators.

    Attributes:
        run_id: the orchestrator's run id.
        state: normalised state.
        native_state: the orchestrator's own state name (e.g. ``COMPLETED``, ``queued``, ``10``).
        started_at / ended_at: ISO 8601 or None.
        message: the orchestrator's state message / error text, if any.
        url: a link a human can open, if the orchestrator has one.
    """

    run_id: str
    state: RunState
    native_state: str
    started_at: str | None = None
    ended_at: str | None = None
    message: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class FailureContext:
    """What an agent needs to diagnose a job: its recent failed runs with error text and log tail.

    Attributes:
        failed_nodes: adapters that know a run's nodes (dbt Core) name the ones that failed in the
            latest failed run: id, type, status, message, failing rows count, compiled SQL.
        source_freshness: the freshness of those nodes' upstream sources, where the adapter can tell.
    """

    job: str
    failed_runs: tuple[RunInfo, ...]
    log_tail: tuple[str, ...] = field(default_factory=tuple)
    failed_nodes: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    source_freshness: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)


class Orchestrator(Protocol):
    """One orchestrator account/server. Implementations are async and hold one pooled client."""

    kind: str

    async def rerun(self, job_id: str, mode: RerunMode, idempotency_key: str) -> RunInfo:
        """Rerun ``job_id``.

        ``failed_only``: retry the failed tasks of the most recent failed run; if there is no failed
        run, raise ``RunConflict``. The returned run id is that run's (Prefect and Airflow retry in
        place) or the new child run's (dbt Cloud and Dagster re-execute from the failure).
        ``full``: start a new run.
        ``idempotency_key`` (derived from the agent's reason/ticket) must make a repeat with the same
        key return the run the first call started instead of launching another.
        """
        ...

    async def status(self, job_id: str, run_id: str) -> RunInfo:
        """The current state of one run of ``job_id``."""
        ...

    async def failure_context(self, job_id: str, limit: int = 3) -> FailureContext:
        """The ``limit`` most recent failed runs and a tail of the latest failure's log."""
        ...

    async def aclose(self) -> None: ...
