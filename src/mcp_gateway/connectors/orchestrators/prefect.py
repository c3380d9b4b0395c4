"""Prefect 3 adapter over the Prefect REST API (self-hosted server or Prefect Cloud).

A job id is ``flow_name/deployment_name``. ``full`` creates a flow run of the deployment with the
gateway's idempotency key (Prefect returns the existing run for a repeated key); ``failed_only`` sends
the deployment's latest run, if it failed, back to ``Scheduled`` (``AwaitingRetry``), as Prefect's own
"retry" does: the run keeps its id and a worker / ``serve`` process picks it up again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from mcp_gateway.connectors.orchestrators import _rest
from mcp_gateway.connectors.orchestrators.base import (
    FailureContext,
    JobNotFound,
    RerunMode,
    RunConflict,
    RunInfo,
    RunState,
)
from mcp_gateway.connectors.orchestrators.config import PrefectSettings, secret_name
from mcp_gateway.types import SecretValue

_SYSTEM = "prefect"
_STATES: dict[str, RunState] = {
    "SCHEDULED": "pending",
    "PENDING": "pending",
    "PAUSED": "pending",
    "RUNNING": "running",
    "CANCELLING": "running",
    "COMPLETED": "success",
    "FAILED": "failed",
    "CRASHED": "failed",
    "CANCELLED": "cancelled",
}
_FAILED_TYPES = ["FAILED", "CRASHED"]
_LOG_LINES = 50
_LINE_CHARS = 500


def _split_job(job_id: str) -> tuple[str, str]:
    flow, sep, deployment = job_id.partition("/")
    if not sep or not flow or not deployment or "/" in deployment:
        raise JobNotFound(f"prefect job id `{job_id}` is not `flow_name/deployment_name`")
    return flow, deployment


class PrefectOrchestrator:
    """One Prefect API (``settings.url`` is the API root, e.g. ``http://127.0.0.1:4200/api``).

    Args:
        settings: the parsed config.
        resolve_secret: vault lookup; the API key is resolved per request (the vault may be sealed
            at start and unsealed later).
        transport: an httpx transport (tests pass ``httpx.MockTransport``).
    """

    kind = "prefect"

    def __init__(
        self,
        settings: PrefectSettings,
        resolve_secret: Callable[[str], SecretValue],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._resolve_secret = resolve_secret
        self._client = _rest.http_client(settings, settings.url + "/", transport)
        base = settings.url.removesuffix("/api")
        self._ui = base if base != settings.url else None

    async def _call(self, method: str, path: str, subject: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if self._settings.api_key is not None:
            key = self._resolve_secret(secret_name(self._settings.api_key)).reveal_text()
            headers["Authorization"] = f"Bearer {key}"
        request = self._client.build_request(method, path, json=body, headers=headers)
        response = await _rest.send(self._client, request, _SYSTEM, retries=self._settings.retries)
        _rest.check(response, _SYSTEM, subject)
        return _rest.json_body(response, _SYSTEM)

    def _run_info(self, raw: Any) -> RunInfo:
        data = _rest.as_dict(raw, _SYSTEM, "a flow run")
        run_id = _rest.text_field(data, "id", _SYSTEM, "a flow run")
        state = data.get("state") if isinstance(data.get("state"), dict) else {}
        assert isinstance(state, dict)  # noqa: S101 - narrowed above, for mypy
        native = _rest.optional_text(state, "type") or _rest.optional_text(data, "state_type") or "UNKNOWN"
        name = _rest.optional_text(state, "name") or _rest.optional_text(data, "state_name")
        return RunInfo(
            run_id=run_id,
            state=_STATES.get(native, "unknown"),
            native_state=f"{native}/{name}" if name and name.upper() != native else native,
            started_at=_rest.optional_text(data, "start_time"),
            ended_at=_rest.optional_text(data, "end_time"),
            message=_rest.optional_text(state, "message"),
            url=f"{self._ui}/runs/flow-run/{run_id}" if self._ui else None,
        )

    async def _deployment_id(self, job_id: str) -> str:
        flow, deployment = _split_job(job_id)
        raw = await self._call(
            "GET",
            f"deployments/name/{quote(flow, safe='')}/{quote(deployment, safe='')}",
            f"deployment `{job_id}`",
        )
        return _rest.text_field(_rest.as_dict(raw, _SYSTEM, "a deployment"), "id", _SYSTEM, "a deployment")

    async def _runs(self, deployment_id: str, job_id: str, flt: dict[str, Any], sort: str, limit: int) -> Any:
        body = {
            "flow_runs": {"deployment_id": {"any_": [deployment_id]}, **flt},
            "sort": sort,
            "limit": limit,
        }
        raw = await self._call("POST", "flow_runs/filter", f"runs of `{job_id}`", body)
        return [self._run_info(item) for item in _rest.as_list(raw, _SYSTEM, "a flow run list")]

    async def rerun(self, job_id: str, mode: RerunMode, idempotency_key: str) -> RunInfo:
        """Start a new run (``full``) or retry the latest failed run (``failed_only``).

        Raises:
            JobNotFound: no such deployment. RunConflict: nothing failed to retry, or Prefect refused
            the state change. OrchestratorUnavailable / OrchestratorError: see ``_rest``.
        """
        deployment_id = await self._deployment_id(job_id)
        if mode == "full":
            raw = await self._call(
                "POST",
                f"deployments/{deployment_id}/create_flow_run",
                f"a run of `{job_id}`",
                {"idempotency_key": idempotency_key, "tags": ["mcp-gateway"]},
            )
            return self._run_info(raw)
        # The latest run that started: retrying an older failure after a later success would redo
        # work that already succeeded.
        latest = await self._runs(
            deployment_id, job_id, {"start_time": {"is_null_": False}}, "START_TIME_DESC", 1
        )
        if not latest or latest[0].state != "failed":
            found = f"`{latest[0].native_state}`" if latest else "no run"
            raise RunConflict(f"the latest run of `{job_id}` has not failed (found {found})")
        run = latest[0]
        answer = await self._call(
            "POST",
            f"flow_runs/{run.run_id}/set_state",
            f"a retry of run `{run.run_id}`",
            {
                "state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "retry via mcp-gateway"},
                "force": True,
            },
        )
        status = _rest.as_dict(answer, _SYSTEM, "a state change").get("status")
        if status != "ACCEPT":
            raise RunConflict(f"prefect did not accept the retry of run `{run.run_id}` (`{status}`)")
        return await self.status(job_id, run.run_id)

    async def status(self, job_id: str, run_id: str) -> RunInfo:
        """The current state of ``run_id``; a run of another deployment counts as not found."""
        deployment_id = await self._deployment_id(job_id)
        raw = await self._call("GET", f"flow_runs/{quote(run_id, safe='')}", f"run `{run_id}`")
        if _rest.as_dict(raw, _SYSTEM, "a flow run").get("deployment_id") != deployment_id:
            raise JobNotFound(f"prefect has no run `{run_id}` of `{job_id}`")
        return self._run_info(raw)

    async def failure_context(self, job_id: str, limit: int = 3) -> FailureContext:
        """The ``limit`` latest failed/crashed runs and the log tail of the latest one."""
        deployment_id = await self._deployment_id(job_id)
        failed = await self._runs(
            deployment_id, job_id, {"state": {"type": {"any_": _FAILED_TYPES}}}, "START_TIME_DESC", limit
        )
        tail: tuple[str, ...] = ()
        if failed:
            body = {
                "logs": {"flow_run_id": {"any_": [failed[0].run_id]}},
                "sort": "TIMESTAMP_DESC",
                "limit": _LOG_LINES,
            }
            raw = await self._call("POST", "logs/filter", f"logs of run `{failed[0].run_id}`", body)
            lines = [
                str(item.get("message", ""))[:_LINE_CHARS]
                for item in _rest.as_list(raw, _SYSTEM, "a log list")
            ]
            tail = tuple(reversed(lines))
        return FailureContext(job=job_id, failed_runs=tuple(failed), log_tail=tail)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()
