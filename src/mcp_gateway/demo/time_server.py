"""A small stdio MCP server shipped in the package: the upstream `mcp-gateway init` and the example
config start, so a fresh install has a working upstream without another package.

Its two tools mirror ``mcp-server-time``'s (same names and arguments), so a policy written for one
grants the other: ``get_current_time(timezone)`` and ``convert_time(source_timezone, time,
target_timezone)``. Run: ``python -m mcp_gateway.demo.time_server`` (it speaks MCP on stdin/stdout).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

server = MCPServer("mcp-gateway-time")


class TimeResult(BaseModel):
    timezone: str
    datetime: str
    """ISO 8601, seconds precision, with the zone's offset."""
    is_dst: bool


class ConversionResult(BaseModel):
    source: TimeResult
    target: TimeResult
    time_difference: str
    """``+9.0h``: how far the target's clock is ahead of the source's."""


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown timezone `{name}`") from None


def _result(name: str, moment: dt.datetime) -> TimeResult:
    return TimeResult(
        timezone=name,
        datetime=moment.isoformat(timespec="seconds"),
        is_dst=bool(moment.dst()),
    )


@server.tool(annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=False))
def get_current_time(
    timezone: Annotated[str, Field(description="IANA timezone name, e.g. `Europe/Paris` or `UTC`")],
) -> TimeResult:
    """The current time in a timezone."""
    return _result(timezone, dt.datetime.now(_zone(timezone)))


@server.tool(annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True))
def convert_time(
    source_timezone: Annotated[str, Field(description="IANA timezone of `time`")],
    time: Annotated[str, Field(description="24-hour `HH:MM` today in the source timezone")],
    target_timezone: Annotated[str, Field(description="IANA timezone to convert to")],
) -> ConversionResult:
    """Convert a time of day from one timezone to another."""
    source_zone, target_zone = _zone(source_timezone), _zone(target_timezone)
    try:
        clock = dt.time.fromisoformat(time)
    except ValueError:
        raise ToolError(f"time `{time}` is not HH:MM") from None
    source = dt.datetime.combine(dt.datetime.now(source_zone).date(), clock, tzinfo=source_zone)
    target = source.astimezone(target_zone)
    offset = (target.utcoffset() or dt.timedelta()) - (source.utcoffset() or dt.timedelta())
    hours = offset.total_seconds() / 3600
    return ConversionResult(
        source=_result(source_timezone, source),
        target=_result(target_timezone, target),
        time_difference=f"{hours:+.1f}h",
    )


def main() -> None:
    """Serve on stdin/stdout until the client closes the pipe."""
    server.run("stdio")


if __name__ == "__main__":
    main()
