"""The edge where HTTP answers of a REST orchestrator become ``base.py`` errors (shared by adapters).

transport error, timeout          → OrchestratorUnavailable
429, 502, 503, 504                → retried (bounded, ``Retry-After`` honoured), then as below
5xx                               → OrchestratorUnavailable
404                               → JobNotFound
409                               → RunConflict
401 / 403                         → OrchestratorError (credentials refused; never echoes them)
other 4xx                         → OrchestratorError
body that is not JSON / not the documented shape → OrchestratorUnavailable

Retries are safe because every state-changing call the adapters make is idempotent on the server:
Prefect deduplicates flow runs by idempotency key, Airflow refuses a second run with the same run id,
and a retried state change of a run that already changed is refused as a conflict. A request that may
have reached the server and timed out (``ReadTimeout``) is not retried; a refused connection is.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import anyio
import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from mcp_gateway.connectors.netguard import BlockedAddress, GuardedTransport
from mcp_gateway.connectors.orchestrators.base import (
    JobNotFound,
    OrchestratorError,
    OrchestratorUnavailable,
    RunConflict,
)
from mcp_gateway.connectors.orchestrators.config import RestSettings

_DETAIL_CHARS = 200
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
"""Answers that say "try again shortly": rate limited, or a proxy / the database behind the API busy."""
WAIT_INITIAL_SECONDS = 0.25
"""First back-off; it doubles per attempt, with jitter, up to ``WAIT_MAX_SECONDS``."""
WAIT_MAX_SECONDS = 5.0
"""Cap on any one wait, including a server's ``Retry-After`` (a longer ask is not honoured: the agent
gets ``OrchestratorUnavailable`` and may call again later)."""


class _TransientAnswer(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), if it has one."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_backoff = wait_exponential_jitter(
    multiplier=WAIT_INITIAL_SECONDS, max=WAIT_MAX_SECONDS, jitter=WAIT_INITIAL_SECONDS
)


def _wait(state: RetryCallState) -> float:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    if isinstance(error, _TransientAnswer):
        asked = _retry_after(error.response)
        if asked is not None:
            return min(asked, WAIT_MAX_SECONDS)
    return min(_backoff(state), WAIT_MAX_SECONDS)


def http_client(
    settings: RestSettings, base_url: str, transport: httpx.AsyncBaseTransport | None, **options: Any
) -> httpx.AsyncClient:
    """The adapter's pooled client: the settings' timeout, no redirects (one could carry the
    credential elsewhere), and the SSRF guard on every request unless ``allow_private_network``
    (a test's ``transport`` replaces the network, guard included)."""
    guarded = transport or GuardedTransport(allow_private_network=settings.allow_private_network)
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=settings.timeout_seconds,
        transport=guarded,
        follow_redirects=False,
        **options,
    )


def refused(exc: BlockedAddress, system: str) -> OrchestratorError:
    """The error for a request the SSRF guard stopped (a configuration matter, not an outage)."""
    return OrchestratorError(f"{system}: {exc}")


async def _sleep(seconds: float) -> None:
    await anyio.sleep(seconds)


async def send(
    client: httpx.AsyncClient, request: httpx.Request, system: str, *, retries: int
) -> httpx.Response:
    """Send ``request``, retrying transient answers and refused connections up to ``retries`` times.

    Returns the last response (a transient status that outlived the retries is returned for ``check``
    to map). A network failure or timeout becomes ``OrchestratorUnavailable``.
    """
    retrying = AsyncRetrying(
        stop=stop_after_attempt(retries + 1),
        wait=_wait,
        sleep=_sleep,
        retry=retry_if_exception_type((_TransientAnswer, httpx.ConnectError)),
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                response = await client.send(request)
                if response.status_code in TRANSIENT_STATUSES:
                    raise _TransientAnswer(response)
                return response
    except _TransientAnswer as exc:
        return exc.response
    except BlockedAddress as exc:
        raise refused(exc, system) from None
    except httpx.TimeoutException as exc:
        raise OrchestratorUnavailable(f"{system} did not answer in time") from exc
    except httpx.HTTPError as exc:
        raise OrchestratorUnavailable(f"{system} is unreachable ({type(exc).__name__})") from exc
    raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover


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
