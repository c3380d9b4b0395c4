"""Build the built-in toolsets that ``gateway.yaml`` configures (each imported only when configured).

``gateway`` (always: ``gateway.echo``), ``data`` (warehouses), ``ops`` (orchestrators and jobs) and
``salesforce`` (orgs). A toolset whose section is empty is not offered at all, so its tools appear in
no catalog. Every tool still needs a grant: a toolset that is offered is not a tool that is allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from mcp_gateway.config import Settings
from mcp_gateway.errors import GatewayError
from mcp_gateway.tools.base import Toolset
from mcp_gateway.tools.gateway_info import build_gateway_toolset
from mcp_gateway.types import SecretValue

if TYPE_CHECKING:
    from mcp_gateway.tools.ops import OpenIdempotency

Resolve = Callable[[str], SecretValue]


def build_toolsets(
    settings: Settings, resolve_secret: Resolve, open_idempotency: OpenIdempotency | None = None
) -> list[Toolset]:
    """The toolsets for the configured sections, in a fixed order.

    Args:
        open_idempotency: opens the ``ops`` rerun idempotency store (None: SQLite in the data dir).
    """
    toolsets: list[Toolset] = [build_gateway_toolset()]
    if settings.warehouses:
        from mcp_gateway.tools.data import build_data_toolset

        toolsets.append(build_data_toolset(settings.warehouses, resolve_secret))
    if settings.jobs:
        from mcp_gateway.tools.ops import build_ops_toolset

        toolsets.append(
            build_ops_toolset(
                settings.orchestrators,
                settings.jobs,
                settings.data_dir,
                resolve_secret,
                open_store=open_idempotency,
            )
        )
    if settings.salesforce:
        from mcp_gateway.tools.salesforce import build_salesforce_toolset

        toolsets.append(build_salesforce_toolset(settings.salesforce, resolve_secret))
    return toolsets


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


def _data() -> Toolset:
    from mcp_gateway.tools.data import build_data_toolset

    return build_data_toolset({}, _no_secrets)


def _ops() -> Toolset:
    from mcp_gateway.tools.ops import build_ops_toolset

    return build_ops_toolset({}, {}, Path("."), _no_secrets)


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
