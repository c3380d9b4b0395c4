"""The ``ops`` toolset: rerun pipeline jobs, read a run's state, and gather a job's failure context.

Tools (each governed by the gateway core like any other tool):

    ops.rerun_job(job, mode, reason)    failed_only: retry the latest failed run; full: start a new run.
                                        The same (job, mode, normalised reason) does not launch twice
                                        within the job's idempotency window (24 h by default), across
                                        restarts too (``orchestrators/idempotency.py``); the answer says
                                        which run it deduplicated to and when the key expires.
    ops.get_job_status(job, run_id)     the normalised state of one run of a configured job.
    ops.get_failure_context(job)        recent failed runs, error text, log tail, admin runbook notes, and
                                        the job's monitor incidents: open ones, and past ones with the
                                        calls that resolved them (``incidents/``).

Only jobs named in config exist for the agent; anything else is a ``ToolFailure``. Adapters are built
per orchestrator on first use (``extra_adapters`` adds or replaces a kind's factory, e.g. in tests).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio
from pydantic import Field

from mcp_gateway.connectors.orchestrators.base import Orchestrator, OrchestratorError, RerunMode, RunInfo
from mcp_gateway.connectors.orchestrators.config import JobSettings, OrchestratorSettings
from mcp_gateway.connectors.orchestrators.idempotency import (
    IdempotencyStore,
    LaunchRecord,
    SQLIdempotencyStore,
    iso,
    rerun_key,
)
from mcp_gateway.errors import ConfigError, SecretNotFound
from mcp_gateway.incidents.model import Incident
from mcp_gateway.incidents.store import IncidentStore
from mcp_gateway.tools.base import BuiltinTool, ToolContext, ToolFailure, ToolInput, Toolset
from mcp_gateway.types import SecretValue

AdapterFactory = Callable[[Any, Callable[[str], SecretValue]], Orchestrator]
"""Builds an adapter from (its settings, resolve_secret)."""
OpenIdempotency = Callable[[Callable[[], float]], SQLIdempotencyStore]
"""Opens the idempotency store (given the toolset's clock); the composition root picks the backend."""

# kind → (module, class); imported on first use so a missing optional adapter breaks only its kind.
_BUILTIN: dict[str, tuple[str, str]] = {
    "prefect": ("mcp_gateway.connectors.orchestrators.prefect", "PrefectOrchestrator"),
    "airflow": ("mcp_gateway.connectors.orchestrators.airflow", "AirflowOrchestrator"),
    "dbt_cloud": ("mcp_gateway.connectors.orchestrators.dbt_cloud", "DbtCloudOrchestrator"),
    "dagster": ("mcp_gateway.connectors.orchestrators.dagster", "DagsterOrchestrator"),
    "dbt_core": ("mcp_gateway.connectors.orchestrators.dbt_core", "DbtCoreOrchestrator"),
}
STORE_FILE = "ops-idempotency.sqlite3"


class RerunJobInput(ToolInput):
    job: str = Field(min_length=1, max_length=200, description="a job name from the gateway's config")
    mode: RerunMode = Field(
        description="failed_only: retry the failed tasks of the latest failed run; full: start a new run"
    )
    reason: str = Field(
        min_length=3,
        max_length=2000,
        description="why (ticket/incident); the same reason for the same job and mode never launches twice",
    )


class JobStatusInput(ToolInput):
    job: str = Field(min_length=1, max_length=200)
    run_id: str = Field(min_length=1, max_length=250)


class FailureContextInput(ToolInput):
    job: str = Field(min_length=1, max_length=200)
    limit: int = Field(default=3, ge=1, le=20, description="how many recent failed runs")


_NODE_FACTS = ("failed_nodes", "source_freshness")


def _run_dict(info: RunInfo) -> dict[str, Any]:
    return {key: value for key, value in asdict(info).items() if value is not None}


class _Ops:
    """The state the three tools share: adapters, the idempotency store, per-key locks."""

    def __init__(
        self,
        orchestrators: Mapping[str, OrchestratorSettings],
        jobs: Mapping[str, JobSettings],
        data_dir: Path,
        resolve_secret: Callable[[str], SecretValue],
        extra_adapters: Mapping[str, AdapterFactory],
        clock: Callable[[], float],
        open_store: OpenIdempotency | None = None,
    ) -> None:
        for name, job in jobs.items():
            if job.orchestrator not in orchestrators:
                raise ConfigError(f"job `{name}` names unknown orchestrator `{job.orchestrator}`")
        self.orchestrators = dict(orchestrators)
        self.jobs = dict(jobs)
        self.data_dir = data_dir
        self.resolve_secret = resolve_secret
        self.extra_adapters = dict(extra_adapters)
        self.clock = clock
        self.adapters: dict[str, Orchestrator] = {}
        self.store: SQLIdempotencyStore | None = None
        self.open_store = open_store
        self.locks: dict[str, anyio.Lock] = {}

    def job(self, name: str) -> tuple[JobSettings, Orchestrator]:
        job = self.jobs.get(name)
        if job is None:
            raise ToolFailure(f"job `{name}` is not configured", {"job": name})
        return job, self.adapter(job.orchestrator)

    def adapter(self, name: str) -> Orchestrator:
        if name not in self.adapters:
            settings = self.orchestrators[name]
            factory = self.extra_adapters.get(settings.kind)
            if factory is None:
                module_name, class_name = _BUILTIN[settings.kind]
                try:
                    factory = getattr(importlib.import_module(module_name), class_name)
                except (ImportError, AttributeError) as exc:
                    raise ToolFailure(f"orchestrator kind `{settings.kind}` is not available") from exc
            assert factory is not None  # noqa: S101 - set in both branches, for mypy
            self.adapters[name] = factory(settings, self.resolve_secret)
        return self.adapters[name]

    def idempotency(self) -> SQLIdempotencyStore:
        if self.store is None:
            if self.open_store is not None:
                self.store = self.open_store(self.clock)
            else:
                self.store = IdempotencyStore(self.data_dir / STORE_FILE, self.clock)
        return self.store

    async def stop(self) -> None:
        adapters, self.adapters = list(self.adapters.values()), {}
        for adapter in adapters:
            await adapter.aclose()
        if self.store is not None:
            self.store.close()
            self.store = None


def _failure(exc: OrchestratorError | SecretNotFound, job: str) -> ToolFailure:
    if isinstance(exc, SecretNotFound):
        return ToolFailure(f"the orchestrator credentials of job `{job}` are not in the vault", {"job": job})
    return ToolFailure(str(exc), {"job": job, "error": type(exc).__name__})


def build_ops_toolset(
    orchestrators: Mapping[str, OrchestratorSettings],
    jobs: Mapping[str, JobSettings],
    data_dir: Path,
    resolve_secret: Callable[[str], SecretValue],
    extra_adapters: Mapping[str, AdapterFactory] | None = None,
    clock: Callable[[], float] = time.time,
    open_store: OpenIdempotency | None = None,
    incidents: IncidentStore | None = None,
) -> Toolset:
    """The ``ops`` toolset over the configured orchestrators and jobs.

    Args:
        orchestrators: orchestrator name → settings.
        jobs: job name (what agents and policy see) → orchestrator name and native id.
        data_dir: the gateway's data dir (holds the idempotency store).
        resolve_secret: vault lookup by secret name, used by adapters at call time.
        extra_adapters: kind → adapter factory ``(settings, resolve_secret)``, overriding the built-ins.
        clock: epoch seconds now; ages idempotency keys (tests inject one instead of sleeping).
        open_store: opens the idempotency store on first use (None: SQLite in ``data_dir``).
        incidents: the monitors' incidents; a job's failure context lists the incidents of its
            monitors, open and past (with the calls that resolved them). None: no monitors.

    Raises:
        ConfigError: a job names an orchestrator that is not configured.
    """
    ops = _Ops(orchestrators, jobs, data_dir, resolve_secret, extra_adapters or {}, clock, open_store)

    async def rerun_job(ctx: ToolContext, args: RerunJobInput) -> dict[str, Any]:
        job, adapter = ops.job(args.job)
        key = rerun_key(args.job, args.mode, args.reason)
        window = job.idempotency_window_seconds
        ctx.audit_detail.update(
            {"job": args.job, "orchestrator": job.orchestrator, "mode": args.mode, "idempotency_key": key}
        )
        lock = ops.locks.setdefault(key, anyio.Lock())
        async with lock:
            store = ops.idempotency()
            seen = await anyio.to_thread.run_sync(store.get, key)
            now = ops.clock()
            live = seen is not None and seen.live(now, window)
            try:
                if seen is not None and live:
                    record = seen
                    info = await adapter.status(job.id, seen.run_id)
                else:
                    # A new window gets a new launch key, so the orchestrator cannot answer it with
                    # the expired window's run; a retry after a crash here reuses the same one.
                    generation = 0 if seen is None else seen.generation + 1
                    record = LaunchRecord(key, args.job, args.mode, "", now, generation)
                    info = await adapter.rerun(job.id, args.mode, record.launch_key)
                    record = await anyio.to_thread.run_sync(
                        lambda: store.record(
                            key, args.job, args.mode, info.run_id, now=now, generation=generation
                        )
                    )
            except (OrchestratorError, SecretNotFound) as exc:
                raise _failure(exc, args.job) from exc
        facts: dict[str, Any] = {
            "already_launched": live,
            "idempotency_key_expires_at": iso(record.expires_at(window)),
        }
        if live:
            facts["deduplicated_to"] = {
                "run_id": record.run_id,
                "launched_at": iso(record.created_at),
                "started_at": info.started_at,
            }
        elif seen is not None:
            facts["previous_key_expired"] = {
                "run_id": seen.run_id,
                "launched_at": iso(seen.created_at),
                "expired_at": iso(seen.expires_at(window)),
            }
        # The state on the record too: a run that failed fixed nothing (an incident's resolution skips it).
        ctx.audit_detail.update({"run_id": info.run_id, "state": info.state, **facts})
        return {"job": args.job, "mode": args.mode, **_run_dict(info), **facts}

    async def get_job_status(ctx: ToolContext, args: JobStatusInput) -> dict[str, Any]:
        job, adapter = ops.job(args.job)
        ctx.audit_detail.update({"job": args.job, "run_id": args.run_id})
        try:
            info = await adapter.status(job.id, args.run_id)
        except (OrchestratorError, SecretNotFound) as exc:
            raise _failure(exc, args.job) from exc
        return {"job": args.job, **_run_dict(info)}

    async def get_failure_context(ctx: ToolContext, args: FailureContextInput) -> dict[str, Any]:
        job, adapter = ops.job(args.job)
        try:
            context = await adapter.failure_context(job.id, args.limit)
        except (OrchestratorError, SecretNotFound) as exc:
            raise _failure(exc, args.job) from exc
        runbooks = ctx.policy_extra.get("runbooks")
        notes = runbooks.get(args.job) if isinstance(runbooks, Mapping) else None
        ctx.audit_detail.update({"job": args.job, "run_ids": [run.run_id for run in context.failed_runs]})
        found = await _incidents_of(args.job, args.limit)
        return {
            "job": args.job,
            "failed_runs": [_run_dict(run) for run in context.failed_runs],
            "log_tail": list(context.log_tail),
            "runbook": notes,
            # dbt Core: the failed nodes (compiled SQL, failing rows) and their sources' freshness.
            **{k: list(v) for k, v in asdict(context).items() if k in _NODE_FACTS and v},
            "open_incidents": [i.as_dict() for i in found if i.status == "open"],
            "previous_incidents": [i.as_dict() for i in found if i.status != "open"],
        }

    async def _incidents_of(job: str, limit: int) -> list[Incident]:
        if incidents is None:
            return []
        return await anyio.to_thread.run_sync(lambda: incidents.history(job=job, limit=limit))

    tools: list[BuiltinTool[Any]] = [
        BuiltinTool(
            name="ops.rerun_job",
            description=(
                "Rerun a configured pipeline job: `failed_only` retries the failed tasks of its latest "
                "failed run, `full` starts a new run. Repeating the same reason within the job's "
                "idempotency window (24 h by default) returns the first run (`already_launched: true`, "
                "`deduplicated_to`) instead of launching again; `idempotency_key_expires_at` says when "
                "the same reason will launch anew."
            ),
            input_model=RerunJobInput,
            run=rerun_job,
            # It starts work the pipeline exists to do; it deletes nothing. Same reason, same run.
            destructive=False,
            idempotent=True,
        ),
        BuiltinTool(
            name="ops.get_job_status",
            description="The state of one run of a configured job (pending/running/success/failed/...).",
            input_model=JobStatusInput,
            run=get_job_status,
            read_only=True,
            idempotent=True,
        ),
        BuiltinTool(
            name="ops.get_failure_context",
            description=(
                "Recent failed runs of a configured job with their error messages, the log tail of the "
                "latest failure, the admins' runbook notes for the job, and its quality monitors' "
                "incidents: open ones, and past ones with the calls that resolved them."
            ),
            input_model=FailureContextInput,
            run=get_failure_context,
            read_only=True,
            idempotent=True,
        ),
    ]
    return Toolset(name="ops", tools={tool.name: tool for tool in tools}, start=None, stop=ops.stop)
