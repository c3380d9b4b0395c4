"""dbt Core in the governed loop: the switch-in gate of the ``data`` toolset, and ``ops.rerun_downstream``.

    ops.rerun_downstream(project, table, reason)
        from the dbt project's lineage (``manifest.json``'s ``child_map``), the models downstream of
        the source reading ``table``, built again in one ``dbt build`` (their tests included). Like
        ``ops.rerun_job``: a grant's argument limits, quota and approval apply, and the same
        (project, table, normalised reason) does not launch twice within 24 h.

The gate (``DbtProjects.gate``) runs a table's ``switch_in_dbt`` selector on the branch before
``data.switch_in`` switches it in: the branch of a PostgreSQL table is the relation
``<table>__branch__<branch>`` next to it, which the dbt project reads instead of production through
the ``gateway_branches`` var (``connectors/orchestrators/dbt_core.py`` says what the project must do).

One ``DbtProjects`` holds one adapter per ``dbt_core`` orchestrator, shared by ``ops.rerun_job``, the
gate and this tool, so the parsed manifest and the run history are the same for all three.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
from pydantic import Field

from mcp_gateway.connectors.orchestrators.base import Orchestrator, OrchestratorError
from mcp_gateway.connectors.orchestrators.config import DbtCoreSettings, OrchestratorSettings
from mcp_gateway.connectors.orchestrators.dbt_core import DbtCoreOrchestrator
from mcp_gateway.connectors.orchestrators.idempotency import (
    DEFAULT_WINDOW_SECONDS,
    IdempotencyStore,
    LaunchRecord,
    SQLIdempotencyStore,
    iso,
    rerun_key,
)
from mcp_gateway.connectors.warehouse.config import PostgresSettings
from mcp_gateway.connectors.warehouse.postgres import BRANCH_MARK
from mcp_gateway.errors import SecretNotFound
from mcp_gateway.tools.base import BuiltinTool, ToolContext, ToolFailure, ToolInput, Toolset
from mcp_gateway.types import SecretValue

STORE_FILE = "ops-idempotency.sqlite3"  # the same store as ``ops.rerun_job`` (distinct keys)
OpenStore = Callable[[Callable[[], float]], SQLIdempotencyStore]


class RerunDownstreamInput(ToolInput):
    project: str = Field(
        min_length=1, max_length=200, description="a dbt Core project from the gateway's config"
    )
    table: str = Field(
        min_length=3,
        max_length=300,
        description="`<warehouse>.<namespace>.<table>` whose downstream models to build again",
    )
    reason: str = Field(
        min_length=3,
        max_length=2000,
        description="why (ticket/incident); the same reason for the same table never launches twice",
    )


def _schema_table(table: str) -> tuple[str, str]:
    parts = table.split(".")
    if len(parts) != 3 or not all(parts):
        raise ToolFailure(f"`{table}` is not `<warehouse>.<namespace>.<table>`")
    return parts[1], parts[2]


def _failed_tests(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {k: n[k] for k in ("node", "name", "status", "failing_rows", "message") if k in n}
        for n in record.get("failed_nodes") or ()
    ]


class DbtProjects:
    """The ``dbt_core`` orchestrators of the config, one adapter each (built on first use).

    Args:
        orchestrators: every configured orchestrator (the ``dbt_core`` ones are kept).
        resolve_secret: vault lookup for the adapters.
        data_dir: run artifacts go to ``<data_dir>/dbt/<name>`` unless a project sets ``artifacts_dir``.
    """

    def __init__(
        self,
        orchestrators: Mapping[str, OrchestratorSettings],
        resolve_secret: Callable[[str], SecretValue],
        data_dir: Path,
    ) -> None:
        self._settings = {n: s for n, s in orchestrators.items() if isinstance(s, DbtCoreSettings)}
        self._resolve = resolve_secret
        self._data_dir = data_dir
        self._adapters: dict[str, DbtCoreOrchestrator] = {}

    def __bool__(self) -> bool:
        return bool(self._settings)

    def get(self, name: str) -> DbtCoreOrchestrator:
        """The adapter of project ``name``.

        Raises:
            ToolFailure: no ``dbt_core`` orchestrator has that name.
        """
        if name not in self._settings:
            raise ToolFailure(f"`{name}` is not a configured dbt Core project", {"project": name})
        if name not in self._adapters:
            work = self._data_dir / "dbt" / name
            self._adapters[name] = DbtCoreOrchestrator(self._settings[name], self._resolve, work_dir=work)
        return self._adapters[name]

    def adapter_for(self, settings: Any, resolve_secret: Callable[[str], SecretValue]) -> Orchestrator:
        """The ``ops`` toolset's adapter factory for ``dbt_core``: the shared adapter of those settings."""
        for name, known in self._settings.items():
            if known is settings:
                return self.get(name)
        return DbtCoreOrchestrator(settings, resolve_secret)

    def gate_for(self, warehouses: Mapping[str, Any]) -> DbtGate:
        """The ``data`` toolset's switch-in gate over ``warehouses`` (see ``gate``)."""

        async def gate(table: str, branch: str, rule: Mapping[str, Any]) -> dict[str, Any]:
            return await self.gate(warehouses, table, branch, rule)

        return gate

    async def gate(
        self, warehouses: Mapping[str, Any], table: str, branch: str, rule: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Run ``rule``'s selector of project ``rule["project"]`` against ``branch`` of ``table``.

        Returns ``project``, ``select``, ``run_id``, ``passed``, ``failed_tests``, ``message``.

        Raises:
            ToolFailure: the table is not in a PostgreSQL warehouse, the project is unknown or does not
                isolate gate runs, dbt is missing, or a secret is not in the vault.
        """
        project, select = str(rule.get("project", "")), str(rule.get("select", ""))
        settings = warehouses.get(table.split(".", 1)[0])
        if not isinstance(settings, PostgresSettings):
            raise ToolFailure(f"dbt switch-in tests run only on PostgreSQL tables, not on `{table}`")
        schema, name = _schema_table(table)
        adapter = self.get(project)
        try:
            record = await adapter.gate(select.split(), schema, name, f"{name}{BRANCH_MARK}{branch}", branch)
        except (OrchestratorError, SecretNotFound) as exc:
            raise _failure(exc, project) from exc
        return {
            "project": project,
            "select": select,
            "run_id": record["run_id"],
            "passed": record["state"] == "success",
            "failed_tests": _failed_tests(record),
            "message": record.get("message"),
        }

    async def aclose(self) -> None:
        """Close every adapter built."""
        adapters, self._adapters = list(self._adapters.values()), {}
        for adapter in adapters:
            await adapter.aclose()


DbtGate = Callable[[str, str, Mapping[str, Any]], Any]
"""``(table, branch, switch_in_dbt rule) -> awaitable gate result`` (``DbtProjects.gate``)."""


def _failure(exc: OrchestratorError | SecretNotFound, project: str) -> ToolFailure:
    if isinstance(exc, SecretNotFound):
        return ToolFailure(
            f"the credentials of dbt project `{project}` are not in the vault", {"project": project}
        )
    return ToolFailure(str(exc), {"project": project, "error": type(exc).__name__})


def build_downstream_toolset(
    projects: DbtProjects,
    data_dir: Path,
    clock: Callable[[], float] = time.time,
    open_store: OpenStore | None = None,
) -> Toolset:
    """A toolset (named ``ops``, merged into the ``ops`` toolset) with ``ops.rerun_downstream``.

    Args:
        projects: the dbt Core projects.
        data_dir: holds the idempotency store when ``open_store`` is None.
        clock: epoch seconds now.
        open_store: opens the rerun idempotency store (the composition root's choice of backend).
    """
    stores: list[SQLIdempotencyStore] = []
    locks: dict[str, anyio.Lock] = {}

    def store() -> SQLIdempotencyStore:
        if not stores:
            stores.append(open_store(clock) if open_store else IdempotencyStore(data_dir / STORE_FILE, clock))
        return stores[0]

    async def rerun_downstream(ctx: ToolContext, args: RerunDownstreamInput) -> dict[str, Any]:
        schema, name = _schema_table(args.table)
        adapter = projects.get(args.project)
        job = f"downstream:{args.project}:{args.table}"
        key = rerun_key(job, "full", args.reason)
        ctx.audit_detail.update({"project": args.project, "table": args.table, "idempotency_key": key})
        async with locks.setdefault(key, anyio.Lock()):
            keys = store()
            seen = await anyio.to_thread.run_sync(keys.get, key)
            now = clock()
            live = seen is not None and seen.live(now, DEFAULT_WINDOW_SECONDS)
            try:
                source = await adapter.source_of(schema, name)
                models = await adapter.downstream(schema, name)
                if not models:
                    raise ToolFailure(f"no dbt model is downstream of `{args.table}`", {"source": source})
                if seen is not None and live:
                    record = seen
                    info = await adapter.status(job, seen.run_id)
                    run: dict[str, Any] = {}
                else:
                    generation = 0 if seen is None else seen.generation + 1
                    launch = LaunchRecord(key, job, "full", "", now, generation).launch_key
                    run = await adapter.launch(job, "full", [f"fqn:{m['fqn']}" for m in models], launch)
                    info = await adapter.status(job, run["run_id"])
                    record = await anyio.to_thread.run_sync(
                        lambda: keys.record(key, job, "full", info.run_id, now=now, generation=generation)
                    )
            except (OrchestratorError, SecretNotFound) as exc:
                raise _failure(exc, args.project) from exc
        names = [m["name"] for m in models]
        facts: dict[str, Any] = {
            "source": source,
            "models": names,
            "run_id": info.run_id,
            "state": info.state,
            "already_launched": live,
            "idempotency_key_expires_at": iso(record.expires_at(DEFAULT_WINDOW_SECONDS)),
        }
        ctx.audit_detail.update(facts)
        result = {"project": args.project, "table": args.table, **facts, "native_state": info.native_state}
        if info.message:
            result["message"] = info.message
        if run.get("failed_nodes"):
            result["failed_nodes"] = run["failed_nodes"]
        return result

    async def stop() -> None:
        if stores:
            stores.pop().close()

    tool = BuiltinTool(
        name="ops.rerun_downstream",
        description=(
            "Build again the dbt models downstream of a table (from the dbt project's lineage), with their "
            "tests, in one run: after a fix was switched in. Repeating the same reason within 24 h returns "
            "the first run (`already_launched: true`)."
        ),
        input_model=RerunDownstreamInput,
        run=rerun_downstream,
        destructive=False,
        idempotent=True,
    )
    return Toolset(name="ops", tools={tool.name: tool}, stop=stop)


def merge_into_ops(ops: Toolset | None, downstream: Toolset, projects: DbtProjects) -> Toolset:
    """``ops`` with the downstream tool added (or the downstream toolset alone); stop closes both."""
    if ops is None:
        ops = Toolset(name="ops", tools={})
    first, second = ops.stop, downstream.stop

    async def stop() -> None:
        for step in (first, second):
            if step is not None:
                await step()
        await projects.aclose()

    return Toolset(name="ops", tools={**ops.tools, **downstream.tools}, start=ops.start, stop=stop)
