"""The one place gateway errors become JSON-RPC errors (the HTTP status follows from the code, as
the transport maps it).

- ``ToolNotGranted`` → -32602, naming only what was asked for (a caller cannot probe the catalog);
- ``InvalidRequestState`` → -32602 "Invalid or expired requestState" (one message for every reason);
- ``ProtocolRefusal`` → its own code, message and data (-32021 and the like, passed on as they came);
- anything else → None: the caller decides (a tool's refusal is an ``isError`` result; another
  method's refusal or upstream failure is -32603 with its message).
"""

from __future__ import annotations

import mcp_types as types
from mcp.shared.exceptions import MCPError

from mcp_gateway.errors import InvalidRequestState, ProtocolRefusal, ToolNotGranted


def protocol_error(exc: Exception) -> MCPError | None:
    """The JSON-RPC error ``exc`` must be answered with, or None when it is the caller's to shape."""
    if isinstance(exc, ToolNotGranted):
        return MCPError(types.INVALID_PARAMS, str(exc))
    if isinstance(exc, InvalidRequestState):
        return MCPError(types.INVALID_PARAMS, "Invalid or expired requestState")
    if isinstance(exc, ProtocolRefusal):
        return MCPError(exc.code, str(exc), exc.data)
    return None
