"""dbt Cloud behind the ``Orchestrator`` Protocol (Administrative API v2).

Endpoints used (all under ``{url}/api/v2/accounts/{account_id}``):

    POST jobs/{job_id}/run/      full run; body ``{"cause": ...}`` (required by the API)
    POST jobs/{job_id}/rerun/    rerun the job's latest run from its point of failure
    GET  runs/{run_id}/          one run (``include_related=["run_steps"]`` adds step logs)
    GET  runs/?job_definition_id=...&order_by=-id&limit=...   recent runs, newest first

Every answer is the documented envelope ``{"status": {"code", "is_success", "user_message",
"developer_message"}, "data": ...}``. The token is sent as ``Authorization: Token <token>`` and is
resolved from the vault on every request, so a rotated secret takes effect without a restart.

dbt Cloud has no idempotency key: the caller (the ``ops`` toolset) keeps the durable key → run
store; this adapter only records the key in the run's ``cause`` so a human can trace it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from mcp_gateway.connectors.netguard import BlockedAddress
from mcp_gateway.connectors.orchestrators import _rest
from mcp_gateway.connectors.orchestrators.base import (
    FailureContext,
    JobNotFound,
    OrchestratorError,
    OrchestratorUnavailable,
    RerunMode,
    RunConflict,
    RunInfo,
    RunState,
)
from mcp_gateway.connectors.orchestrators.config import DbtCloudSettings, secret_name
from mcp_gateway.types import SecretValue

# dbt Cloud run status codes (RunResponse.status) → normalised state.
STATUS_STATES: dict[int, RunState] = {
    1: "pending",  # Queued
    2: "pending",  # Starting
    3: "running",  # Running
    10: "success",
    20: "failed",  # Error
    30: "cancelled",
}
ERROR_STATUS = 20
_CAUSE_MAX = 255  # the API rejects longer causes
_LOG_TAIL_LINES = 40
_MESSAGE_MAX = 300
_NUMERIC = re.compile(r"[0-9]{1,18}")


class DbtCloudOrchestrator:
    """One dbt Cloud account.

    Args:
        settings: url, account id, token reference and timeout.
        resolve_secret: vault lookup by secret name (raises ``VaultSealed``/``SecretNotFound``).
        transport: an httpx transport (tests pass ``httpx.MockTransport``); default is the network.
    """

    kind = "dbt_cloud"

    def __init__(
        self,
        settings: DbtCloudSettings,
        resolve_secret: Callable[[str], SecretValue],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._resolve_secret = resolve_secret
        self._token_name = secret_name(settings.token)
        self._client = _rest.http_client(
            settings,
            f"{settings.url}/api/v2/accounts/{settings.account_id}/",
            transport,
            headers={"Accept": "application/json"},
        )

    async def rerun(self, job_id: str, mode: RerunMode, idempotency_key: str) -> RunInfo:
        """Start a run of ``job_id``: a new full run, or a rerun from the point of failure.

        ``failed_only`` requires the job's latest run to have failed (dbt Cloud's rerun endpoint
        would otherwise silently start a full run); the result is the new run dbt Cloud enqueues.

        Raises:
            JobNotFound: no such job in the account.
            RunConflict: ``failed_only`` and the latest run did not fail.
            OrchestratorError / OrchestratorUnavailable: refused, unreachable or garbage.
        """
        job = _job_number(job_id)
        if mode == "failed_only":
            latest = await self._runs(job, limit=1)
            if not latest:
                raise RunConflict(f"dbt cloud job `{job_id}` has no run to rerun from failure")
            run = latest[0]
            if run.get("status") != ERROR_STATUS:
                info = _run_info(run)
                raise RunConflict(
                    f"dbt cloud job `{job_id}`: latest run {info.run_id} is {info.state}, "
                    "not failed; nothing to rerun from failure"
                )
            data = await self._request("POST", f"jobs/{job}/rerun/", what=f"job `{job_id}`")
        else:
            cause = f"mcp-gateway rerun (key {idempotency_key})"[:_CAUSE_MAX]
            data = await self._request(
                "POST", f"jobs/{job}/run/", json_body={"cause": cause}, what=f"job `{job_id}`"
            )
        return _run_info(_as_object(data))

    async def status(self, job_id: str, run_id: str) -> RunInfo:
        """The current state of run ``run_id`` of ``job_id``.

        Raises:
            JobNotFound: no such run, or the run belongs to another job.
        """
        job = _job_number(job_id)
        run = _as_object(await self._request("GET", f"runs/{_run_number(run_id)}/", what=f"run `{run_id}`"))
        if run.get("job_definition_id") != job:
            raise JobNotFound(f"dbt cloud run `{run_id}` is not a run of job `{job_id}`")
        return _run_info(run)

    async def failure_context(self, job_id: str, limit: int = 3) -> FailureContext:
        """The ``limit`` most recent failed runs of ``job_id`` and the failing step's log tail."""
        job = _job_number(job_id)
        failed = await self._runs(job, limit=max(1, min(limit, 100)), status=ERROR_STATUS)
        runs = tuple(_run_info(run) for run in failed)
        tail: tuple[str, ...] = ()
        if failed:
            latest = _as_object(
                await self._request(
                    "GET",
                    f"runs/{failed[0].get('id')}/",
                    params={"include_related": '["run_steps"]'},
                    what=f"run `{failed[0].get('id')}`",
                )
            )
            tail = _log_tail(latest.get("run_steps"))
        return FailureContext(job=job_id, failed_runs=runs, log_tail=tail)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _runs(self, job: int, *, limit: int, status: int | None = None) -> list[Mapping[str, Any]]:
        params: dict[str, str | int] = {"job_definition_id": job, "order_by": "-id", "limit": limit}
        if status is not None:
            params["status"] = status
        data = await self._request("GET", "runs/", params=params, what=f"job `{job}`")
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise OrchestratorUnavailable("dbt cloud answered a run list that is not a list of runs")
        return data

    async def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str | int] | None = None,
        json_body: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request and unwrap the envelope's ``data``; map every failure to a base error."""
        token = self._resolve_secret(self._token_name).reveal_text()
        try:
            response = await self._client.request(
                method,
                path,
                params=params,
                json=json_body,
                headers={"Authorization": f"Token {token}"},
            )
        except BlockedAddress as exc:
            raise _rest.refused(exc, "dbt cloud") from None
        except httpx.TimeoutException as exc:
            raise OrchestratorUnavailable(f"dbt cloud at `{self._settings.url}` timed out") from exc
        except httpx.HTTPError as exc:
            raise OrchestratorUnavailable(
                f"dbt cloud at `{self._settings.url}` is unreachable ({type(exc).__name__})"
            ) from exc
        return _unwrap(response, what=what, token=token)


def _unwrap(response: httpx.Response, *, what: str, token: str) -> Any:
    code = response.status_code
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    envelope = body if isinstance(body, dict) and isinstance(body.get("status"), dict) else None
    message = _server_message(envelope, token)
    if code in (401, 403):
        raise OrchestratorError(f"dbt cloud refused the credentials ({code}){message}")
    if code == 404:
        raise JobNotFound(f"dbt cloud has no {what}{message}")
    if code == 409:
        raise RunConflict(f"dbt cloud refused {what} in its current state{message}")
    if code == 429 or code >= 500:
        raise OrchestratorUnavailable(f"dbt cloud answered {code} for {what}{message}")
    if code >= 400:
        raise OrchestratorError(f"dbt cloud rejected the request for {what} ({code}){message}")
    if envelope is None or "data" not in envelope:
        raise OrchestratorUnavailable(f"dbt cloud answered {what} without the documented envelope")
    if envelope["status"].get("is_success") is False:
        raise OrchestratorError(f"dbt cloud reported failure for {what}{message}")
    return envelope["data"]


def _server_message(envelope: Mapping[str, Any] | None, token: str) -> str:
    """``: <user_message>`` from an envelope, shortened and with the token scrubbed (belt and braces)."""
    if envelope is None:
        return ""
    text = envelope["status"].get("user_message") or envelope["status"].get("developer_message")
    if not isinstance(text, str) or not text.strip():
        return ""
    if token:
        text = text.replace(token, "[redacted]")
    return f": {text.strip()[:_MESSAGE_MAX]}"


def _as_object(data: Any) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise OrchestratorUnavailable("dbt cloud answered a run that is not an object")
    return data


def _run_info(run: Mapping[str, Any]) -> RunInfo:
    run_id, status = run.get("id"), run.get("status")
    if not isinstance(run_id, int) or not isinstance(status, int):
        raise OrchestratorUnavailable("dbt cloud answered a run without an integer `id` and `status`")
    message = run.get("status_message")
    return RunInfo(
        run_id=str(run_id),
        state=STATUS_STATES.get(status, "unknown"),
        native_state=str(status),
        started_at=_text(run.get("started_at")),
        ended_at=_text(run.get("finished_at")),
        message=message[:_MESSAGE_MAX] if isinstance(message, str) and message else None,
        url=_text(run.get("href")),
    )


def _log_tail(steps: Any) -> tuple[str, ...]:
    """The last lines of the failing step's logs (or of the last step when none is marked failed)."""
    if not isinstance(steps, list) or not steps:
        return ()
    objects = [step for step in steps if isinstance(step, dict)]
    failing = [step for step in objects if step.get("status") == ERROR_STATUS] or objects[-1:]
    logs = failing[-1].get("logs") if failing else None
    if not isinstance(logs, str):
        return ()
    return tuple(logs.splitlines()[-_LOG_TAIL_LINES:])


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _job_number(job_id: str) -> int:
    if not _NUMERIC.fullmatch(job_id):
        raise OrchestratorError(f"dbt cloud job id `{job_id[:40]}` must be the numeric job id")
    return int(job_id)


def _run_number(run_id: str) -> int:
    if not _NUMERIC.fullmatch(run_id):
        raise JobNotFound(f"dbt cloud run id `{run_id[:40]}` is not a numeric run id")
    return int(run_id)
