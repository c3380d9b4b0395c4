"""Build the built-in toolsets that ``gateway.yaml`` configures (each imported only when configured).

``gateway`` (always: ``gateway.echo``), ``data`` (warehouses), ``ops`` (orchestrators and jobs) and
``salesforce`` (orgs). A toolset whose section is empty is not offered at all, so its tools appear in
no catalog. Every tool still needs a grant: a toolset that is offered is not a tool that is allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp_gateway.config import Settings
from mcp_gateway.errors import GatewayError
from mcp_gateway.tools.base import Toolset
from mcp_gateway.tools.gateway_info import build_gateway_toolset
from mcp_gateway.types import SecretValue

if TYPE_CHECKING:
    from mcp_gateway.incidents.store import IncidentStore
    from mcp_gateway.tools.dbt_runs import DbtProjects
    from mcp_gateway.tools.ops import OpenIdempotency

Resolve = Callable[[str], SecretValue]


def build_toolsets(
    settings: Settings,
    resolve_secret: Resolve,
    open_idempotency: OpenIdempotency | None = None,
    incidents: IncidentStore | None = None,
) -> list[Toolset]:
    """The toolsets for the configured sections, in a fixed order.

    Args:
        open_idempotency: opens the ``ops`` rerun idempotency store (None: SQLite in the data dir).
        incidents: the monitors' incidents (``ops.get_failure_context`` lists a job's).
    """
    toolsets: list[Toolset] = [build_gateway_toolset()]
    dbt = _dbt_projects(settings, resolve_secret)
    if settings.warehouses:
        from mcp_gateway.tools.data import build_data_toolset

        gate = dbt.gate_for(settings.warehouses) if dbt else None
        data = build_data_toolset(settings.warehouses, resolve_secret, gate)
        toolsets.append(_with_reads(data, settings.warehouses, resolve_secret))
    if settings.jobs:
        from mcp_gateway.tools.ops import build_ops_toolset

        toolsets.append(
            build_ops_toolset(
                settings.orchestrators,
                settings.jobs,
                settings.data_dir,
                resolve_secret,
                open_store=open_idempotency,
                incidents=incidents,
                extra_adapters={"dbt_core": dbt.adapter_for} if dbt else None,
            )
        )
    if dbt:
        # ops.rerun_downstream joins the ops toolset (or is the whole of it when no job is configured).
        from mcp_gateway.tools.dbt_runs import build_downstream_toolset, merge_into_ops

        ops = toolsets.pop() if toolsets[-1].name == "ops" else None
        downstream = build_downstream_toolset(dbt, settings.data_dir, open_store=open_idempotency)
        toolsets.append(merge_into_ops(ops, downstream, dbt))
    if settings.salesforce:
        from mcp_gateway.tools.salesforce import build_salesforce_toolset

        toolsets.append(build_salesforce_toolset(settings.salesforce, resolve_secret))
    return toolsets


def _dbt_projects(settings: Settings, resolve_secret: Resolve) -> DbtProjects | None:
    """The ``dbt_core`` projects shared by ``ops``, the ``data`` switch-in gate and rerun_downstream."""
    if not any(o.kind == "dbt_core" for o in settings.orchestrators.values()):
        return None
    from mcp_gateway.tools.dbt_runs import DbtProjects

    return DbtProjects(settings.orchestrators, resolve_secret, settings.data_dir)


class _BuiltinToolNames(Mapping[str, frozenset[str]]):
    """Toolset → its tool names, each toolset built (its module imported) on first lookup only."""

    def __init__(self) -> None:
        self._names: dict[str, frozenset[str]] = {}

    def __getitem__(self, toolset: str) -> frozenset[str]:
        if toolset not in _BUILDERS:
            raise KeyError(toolset)
        if toolset not in self._names:
            self._names[toolset] = frozenset(_BUILDERS[toolset]().tools)
        return self._names[toolset]

    def __iter__(self) -> Iterator[str]:
        return iter(_BUILDERS)

    def __len__(self) -> int:
        return len(_BUILDERS)


def _no_secrets(name: str) -> SecretValue:
    raise GatewayError(f"secret `{name}` is not needed to list tool names")


def _with_reads(toolset: Toolset, warehouses: Mapping[str, Any], resolve_secret: Resolve) -> Toolset:
    """``toolset`` (``data``) plus the read tools (``tools/data_read.py``), closed together."""
    import anyio.to_thread

    from mcp_gateway.tools.data_read import build_read_tools

    reads, close_reads = build_read_tools(warehouses, resolve_secret)
    stop_writes = toolset.stop

    async def stop() -> None:
        try:
            if stop_writes is not None:
                await stop_writes()
        finally:
            await anyio.to_thread.run_sync(close_reads)

    return Toolset(toolset.name, {**toolset.tools, **{t.name: t for t in reads}}, toolset.start, stop)


def _data() -> Toolset:
    from mcp_gateway.tools.data import build_data_toolset

    return _with_reads(build_data_toolset({}, _no_secrets), {}, _no_secrets)


def _ops() -> Toolset:
    from mcp_gateway.tools.dbt_runs import DbtProjects, build_downstream_toolset, merge_into_ops
    from mcp_gateway.tools.ops import build_ops_toolset

    projects = DbtProjects({}, _no_secrets, Path("."))
    downstream = build_downstream_toolset(projects, Path("."))
    return merge_into_ops(build_ops_toolset({}, {}, Path("."), _no_secrets), downstream, projects)


def _salesforce() -> Toolset:
    from mcp_gateway.tools.salesforce import build_salesforce_toolset

    return build_salesforce_toolset({}, _no_secrets)


_BUILDERS: dict[str, Callable[[], Toolset]] = {
    "gateway": build_gateway_toolset,
    "data": _data,
    "ops": _ops,
    "salesforce": _salesforce,
}


def builtin_tool_names() -> Mapping[str, frozenset[str]]:
    """Every built-in toolset's tool names, configured or not (building a toolset opens nothing).

    Policy loading refuses a grant under a built-in prefix that names no such tool (``data.update_row``
    would otherwise drop the permission without a word). A toolset's module is imported only when a
    grant names its prefix, so a gateway without data grants never loads the data stack for this.
    """
    return _BuiltinToolNames()
