"""The edge where HTTP answers of a REST orchestrator become ``base.py`` errors (shared by adapters).

transport error, timeout          → OrchestratorUnavailable
5xx                               → OrchestratorUnavailable
404                               → JobNotFound
409                               → RunConflict
401 / 403                         → OrchestratorError (credentials refused; never echoes them)
other 4xx                         → OrchestratorError
body that is not JSON / not the documented shape → OrchestratorUnavailable
"""

from __future__ import annotations

from typing import Any

import httpx

from mcp_gateway.orchestrators.base import (
    JobNotFound,
    OrchestratorError,
    OrchestratorUnavailable,
    RunConflict,
)

_DETAIL_CHARS = 200


async def send(client: httpx.AsyncClient, request: httpx.Request, system: str) -> httpx.Response:
    """Send ``request``; a network failure or timeout becomes ``OrchestratorUnavailable``."""
    try:
        return await client.send(request)
    except httpx.TimeoutException as exc:
        raise OrchestratorUnavailable(f"{system} did not answer in time") from exc
    except httpx.HTTPError as exc:
        raise OrchestratorUnavailable(f"{system} is unreachable ({type(exc).__name__})") from exc


def _detail(response: httpx.Response) -> str:
    """A short, single-line excerpt of an error body (the orchestrator's own words, for the agent)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    text = body.get("detail", body) if isinstance(body, dict) else body
    flat = " ".join(str(text).split())
    return f": {flat[:_DETAIL_CHARS]}" if flat else ""


def check(response: httpx.Response, system: str, subject: str) -> None:
    """Raise the ``base.py`` error that ``response``'s status means; return on 2xx.

    Args:
        system: ``prefect`` / ``airflow``, named in messages.
        subject: what was asked for, e.g. ``deployment `orders/nightly```, named in 404/409 messages.
    """
    status = response.status_code
    if status < 300:
        return
    if status == 404:
        raise JobNotFound(f"{system} has no {subject}")
    if status == 409:
        raise RunConflict(f"{system} refused {subject} in its current state{_detail(response)}")
    if status in (401, 403):
        raise OrchestratorError(f"{system} refused the gateway's credentials (http {status})")
    if status >= 500:
        raise OrchestratorUnavailable(f"{system} failed with http {status}")
    raise OrchestratorError(f"{system} rejected the request for {subject} (http {status}){_detail(response)}")


def json_body(response: httpx.Response, system: str) -> Any:
    """The parsed JSON body; a body that is not JSON becomes ``OrchestratorUnavailable``."""
    try:
        return response.json()
    except ValueError as exc:
        raise OrchestratorUnavailable(f"{system} answered with a body that is not json") from exc


def as_dict(value: Any, system: str, what: str) -> dict[str, Any]:
    """``value`` if it is a JSON object, else ``OrchestratorUnavailable`` (undocumented shape)."""
    if not isinstance(value, dict):
        raise OrchestratorUnavailable(f"{system} answered {what} in an unexpected shape")
    return value


def as_list(value: Any, system: str, what: str) -> list[dict[str, Any]]:
    """``value`` if it is a JSON array of objects, else ``OrchestratorUnavailable``."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise OrchestratorUnavailable(f"{system} answered {what} in an unexpected shape")
    return value


def text_field(data: dict[str, Any], key: str, system: str, what: str) -> str:
    """A required non-empty string field, else ``OrchestratorUnavailable``."""
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise OrchestratorUnavailable(f"{system} answered {what} without `{key}`")
    return value


def optional_text(data: dict[str, Any], key: str) -> str | None:
    """An optional string field (anything else counts as absent)."""
    value = data.get(key)
    return value if isinstance(value, str) and value else None
