"""Apache Airflow 3 adapter over the public REST API v2 (``/api/v2``).

A job id is a ``dag_id``. Authentication: ``POST /auth/token`` with the configured username and the
vault's password gives a JWT (simple auth manager and FAB both serve it); the token is cached and
fetched again once when a call answers 401.

``full`` triggers a DAG run whose ``dag_run_id`` is derived from the gateway's idempotency key, so a
repeat is answered 409 and the adapter returns the run that exists. ``failed_only`` clears the failed
task instances of the DAG's latest run (``.../dagRuns/{id}/clear`` with ``only_failed``) if it failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from mcp_gateway.connectors.orchestrators import _rest
from mcp_gateway.connectors.orchestrators.base import (
    FailureContext,
    OrchestratorUnavailable,
    RerunMode,
    RunConflict,
    RunInfo,
    RunState,
)
from mcp_gateway.connectors.orchestrators.config import AirflowSettings, secret_name
from mcp_gateway.types import SecretValue

_SYSTEM = "airflow"
_STATES: dict[str, RunState] = {
    "queued": "pending",
    "running": "running",
    "success": "success",
    "failed": "failed",
}
_LOG_LINES = 50
_LINE_CHARS = 500
RUN_ID_PREFIX = "mcp-gw-"


def run_id_for(idempotency_key: str) -> str:
    """The ``dag_run_id`` a ``full`` rerun with ``idempotency_key`` gets (Airflow's allowed characters)."""
    return RUN_ID_PREFIX + idempotency_key[:40]


class AirflowOrchestrator:
    """One Airflow 3 API server (``settings.url`` is its root, e.g. ``http://127.0.0.1:8080``).

    Args:
        settings: the parsed config.
        resolve_secret: vault lookup for the password (resolved when a token is needed).
        transport: an httpx transport (tests pass ``httpx.MockTransport``).
    """

    kind = "airflow"

    def __init__(
        self,
        settings: AirflowSettings,
        resolve_secret: Callable[[str], SecretValue],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._resolve_secret = resolve_secret
        self._client = _rest.http_client(settings, settings.url + "/", transport)
        self._token: str | None = None
        self._token_lock = anyio.Lock()

    async def _fetch_token(self, stale: str | None) -> str:
        async with self._token_lock:
            # Another task may have refreshed while this one waited.
            if self._token is not None and self._token != stale:
                return self._token
            password = self._resolve_secret(secret_name(self._settings.password)).reveal_text()
            request = self._client.build_request(
                "POST", "auth/token", json={"username": self._settings.username, "password": password}
            )
            response = await _rest.send(self._client, request, _SYSTEM, retries=self._settings.retries)
            _rest.check(response, _SYSTEM, "a token")
            body = _rest.as_dict(_rest.json_body(response, _SYSTEM), _SYSTEM, "a token")
            self._token = _rest.text_field(body, "access_token", _SYSTEM, "a token")
            return self._token

    async def _call(
        self,
        method: str,
        path: str,
        subject: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        token = self._token or await self._fetch_token(None)
        for attempt in range(2):
            request = self._client.build_request(
                method,
                "api/v2/" + path,
                json=body,
                params=params,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            )
            response = await _rest.send(self._client, request, _SYSTEM, retries=self._settings.retries)
            if response.status_code == 401 and attempt == 0:
                token = await self._fetch_token(token)
                continue
            break
        return response

    async def _json(self, method: str, path: str, subject: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._call(method, path, subject, **kwargs)
        _rest.check(response, _SYSTEM, subject)
        return _rest.as_dict(_rest.json_body(response, _SYSTEM), _SYSTEM, subject)

    def _run_info(self, data: dict[str, Any], dag_id: str) -> RunInfo:
        run_id = _rest.text_field(data, "dag_run_id", _SYSTEM, "a dag run")
        native = _rest.optional_text(data, "state") or "unknown"
        return RunInfo(
            run_id=run_id,
            state=_STATES.get(native, "unknown"),
            native_state=native,
            started_at=_rest.optional_text(data, "start_date"),
            ended_at=_rest.optional_text(data, "end_date"),
            message=_rest.optional_text(data, "note"),
            url=f"{self._settings.url}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}",
        )

    def _runs_path(self, dag_id: str) -> str:
        return f"dags/{quote(dag_id, safe='')}/dagRuns"

    async def _latest_runs(self, dag_id: str, limit: int, state: str | None = None) -> list[RunInfo]:
        params: dict[str, Any] = {"order_by": "-run_after", "limit": limit}
        if state is not None:
            params["state"] = state
        data = await self._json("GET", self._runs_path(dag_id), f"dag `{dag_id}`", params=params)
        runs = _rest.as_list(data.get("dag_runs"), _SYSTEM, "a dag run list")
        return [self._run_info(item, dag_id) for item in runs]

    async def rerun(self, job_id: str, mode: RerunMode, idempotency_key: str) -> RunInfo:
        """Trigger a new DAG run (``full``) or clear the failed tasks of the latest run (``failed_only``).

        Raises:
            JobNotFound: no such DAG. RunConflict: the latest run has not failed. OrchestratorUnavailable
            / OrchestratorError: see ``_rest``.
        """
        runs = self._runs_path(job_id)
        if mode == "full":
            run_id = run_id_for(idempotency_key)
            response = await self._call(
                "POST",
                runs,
                f"dag `{job_id}`",
                body={"dag_run_id": run_id, "logical_date": None, "note": "triggered via mcp-gateway"},
            )
            if response.status_code == 409:
                # The run this key started before (a crash between launch and the gateway's record).
                return await self.status(job_id, run_id)
            _rest.check(response, _SYSTEM, f"dag `{job_id}`")
            data = _rest.as_dict(_rest.json_body(response, _SYSTEM), _SYSTEM, "a dag run")
            return self._run_info(data, job_id)
        latest = await self._latest_runs(job_id, 1)
        if not latest or latest[0].state != "failed":
            found = f"`{latest[0].native_state}`" if latest else "no run"
            raise RunConflict(f"the latest run of `{job_id}` has not failed (found {found})")
        run_id = latest[0].run_id
        await self._json(
            "POST",
            f"{runs}/{quote(run_id, safe='')}/clear",
            f"run `{run_id}` of `{job_id}`",
            body={"dry_run": False, "only_failed": True},
        )
        return await self.status(job_id, run_id)

    async def status(self, job_id: str, run_id: str) -> RunInfo:
        """The current state of ``run_id`` of DAG ``job_id``."""
        path = f"{self._runs_path(job_id)}/{quote(run_id, safe='')}"
        return self._run_info(await self._json("GET", path, f"run `{run_id}` of `{job_id}`"), job_id)

    async def _log_tail(self, dag_id: str, run_id: str) -> tuple[str, ...]:
        base = f"{self._runs_path(dag_id)}/{quote(run_id, safe='')}/taskInstances"
        data = await self._json("GET", base, f"tasks of run `{run_id}`", params={"state": "failed"})
        tasks = _rest.as_list(data.get("task_instances"), _SYSTEM, "a task instance list")
        if not tasks:
            return ()
        task = tasks[0]
        task_id = _rest.text_field(task, "task_id", _SYSTEM, "a task instance")
        try_number = task.get("try_number")
        if not isinstance(try_number, int) or try_number < 1:
            raise OrchestratorUnavailable("airflow answered a task instance without `try_number`")
        path = f"{base}/{quote(task_id, safe='')}/logs/{try_number}"
        params: dict[str, Any] = {"full_content": "true"}
        if isinstance(task.get("map_index"), int) and task["map_index"] >= 0:
            params["map_index"] = task["map_index"]
        logs = await self._json("GET", path, f"log of task `{task_id}`", params=params)
        return tuple(line[:_LINE_CHARS] for line in _log_lines(logs.get("content"))[-_LOG_LINES:])

    async def failure_context(self, job_id: str, limit: int = 3) -> FailureContext:
        """The ``limit`` latest failed runs and the log tail of a failed task of the latest one."""
        failed = await self._latest_runs(job_id, limit, state="failed")
        tail = await self._log_tail(job_id, failed[0].run_id) if failed else ()
        return FailureContext(job=job_id, failed_runs=tuple(failed), log_tail=tail)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


def _log_lines(content: Any) -> list[str]:
    """Task log lines: Airflow 3 answers structured entries (``event`` per line); older, one string."""
    if isinstance(content, str):
        return content.splitlines()
    if not isinstance(content, list):
        raise OrchestratorUnavailable("airflow answered a task log in an unexpected shape")
    lines: list[str] = []
    for entry in content:
        if isinstance(entry, dict):
            level = entry.get("level")
            event = str(entry.get("event", ""))
            lines.append(f"{str(level).upper()} {event}" if isinstance(level, str) else event)
            # Airflow 3 puts the exception in a structured field, not in the event text.
            for error in entry.get("error_detail") or []:
                if isinstance(error, dict):
                    lines.append(f"{error.get('exc_type', 'Exception')}: {error.get('exc_value', '')}")
        else:
            lines.append(str(entry))
    return lines
