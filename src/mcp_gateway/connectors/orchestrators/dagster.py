"""Dagster behind the ``Orchestrator`` Protocol (webserver / Dagster+ GraphQL at ``{url}/graphql``).

A job id is ``location/repository/job`` (or ``location/job`` for the default ``__repository__`` of a
``Definitions`` object). Operations used:

    launchRun(executionParams: {selector: {repositoryLocationName, repositoryName, jobName},
              executionMetadata: {tags}})                                    full run
    launchRunReexecution(reexecutionParams: {parentRunId, strategy: FROM_FAILURE, extraTags})
                                                                             failed_only
    runOrError(runId)                                                        status
    runsOrError(filter: {pipelineName, statuses, tags}, limit)               recent / failed runs
    logsForRun(runId, limit)                                                 the failure's log tail

Results are unions; every member is mapped: ``LaunchRunSuccess``/``Run``/``Runs`` are answers,
``PipelineNotFoundError``/``RunNotFoundError`` (and ``JobNotFoundError``/``RepositoryLocationNotFound``
where a server has them) become ``JobNotFound``, ``RunConflict`` becomes ``RunConflict``,
``PythonError`` (a server-side exception) becomes ``OrchestratorUnavailable``, and the rest
(``InvalidStepError``, ``RunConfigValidationInvalid``, ``UnauthorizedError``...) ``OrchestratorError``.

Idempotency: every launch carries the tag ``mcp-gateway/idempotency-key``; a repeat with the same
key finds the tagged run with ``runsOrError`` and returns it instead of launching another. A
Dagster+ token (``Dagster-Cloud-Api-Token`` header) is resolved from the vault on every request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
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
from mcp_gateway.connectors.orchestrators.config import DagsterSettings, secret_name
from mcp_gateway.types import SecretValue

IDEMPOTENCY_TAG = "mcp-gateway/idempotency-key"
DEFAULT_REPOSITORY = "__repository__"
STATUS_STATES: dict[str, RunState] = {
    "QUEUED": "pending",
    "NOT_STARTED": "pending",
    "MANAGED": "pending",
    "STARTING": "pending",
    "STARTED": "running",
    "CANCELING": "running",
    "SUCCESS": "success",
    "FAILURE": "failed",
    "CANCELED": "cancelled",
}
_NOT_FOUND = {"PipelineNotFoundError", "JobNotFoundError", "RunNotFoundError", "RepositoryLocationNotFound"}
_LOG_TAIL_LINES = 40
_MESSAGE_MAX = 300
_SCAN = 20  # runs fetched per job name when matching location/repository client-side

_RUN_FIELDS = """
fragment GatewayRun on Run {
  runId status jobName startTime endTime parentRunId
  repositoryOrigin { repositoryLocationName repositoryName }
}
"""
_LAUNCH_RESULT = """
  __typename
  ... on LaunchRunSuccess { run { ...GatewayRun } }
  ... on Error { message }
  ... on InvalidStepError { invalidStepKey }
  ... on InvalidOutputError { stepKey invalidOutputName }
  ... on RunConfigValidationInvalid { errors { message } }
"""
LAUNCH_RUN = (
    "mutation GatewayLaunchRun($executionParams: ExecutionParams!) {\n"
    "  launchRun(executionParams: $executionParams) {" + _LAUNCH_RESULT + "}\n}\n" + _RUN_FIELDS
)
LAUNCH_REEXECUTION = (
    "mutation GatewayReexecute($reexecutionParams: ReexecutionParams!) {\n"
    "  launchRunReexecution(reexecutionParams: $reexecutionParams) {"
    + _LAUNCH_RESULT
    + "}\n}\n"
    + _RUN_FIELDS
)
RUN_OR_ERROR = (
    "query GatewayRunStatus($runId: ID!) {\n"
    "  runOrError(runId: $runId) { __typename ...GatewayRun ... on Error { message } }\n}\n" + _RUN_FIELDS
)
RUNS_OR_ERROR = (
    "query GatewayRuns($filter: RunsFilter, $limit: Int) {\n"
    "  runsOrError(filter: $filter, limit: $limit) {\n"
    "    __typename ... on Runs { results { ...GatewayRun } } ... on Error { message }\n  }\n}\n"
    + _RUN_FIELDS
)
LOGS_FOR_RUN = """
query GatewayRunLogs($runId: ID!, $limit: Int) {
  logsForRun(runId: $runId, limit: $limit) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message level stepKey }
        ... on ExecutionStepFailureEvent { error { message } }
        ... on RunFailureEvent { error { message } }
      }
    }
    ... on Error { message }
  }
}
"""


class DagsterJobRef:
    """A parsed ``location/repository/job`` (or ``location/job``) id."""

    def __init__(self, job_id: str) -> None:
        parts = job_id.split("/")
        if len(parts) == 2:
            parts.insert(1, DEFAULT_REPOSITORY)
        if len(parts) != 3 or not all(parts):
            raise OrchestratorError(
                f"dagster job id `{job_id[:80]}` must be `location/repository/job` or `location/job`"
            )
        self.location, self.repository, self.name = parts

    def selector(self) -> dict[str, str]:
        return {
            "repositoryLocationName": self.location,
            "repositoryName": self.repository,
            "jobName": self.name,
        }

    def owns(self, run: Mapping[str, Any]) -> bool:
        """True if ``run`` is a run of this job (origin checked when the server reports it)."""
        if run.get("jobName") != self.name:
            return False
        origin = run.get("repositoryOrigin")
        if not isinstance(origin, dict):
            return True
        return (origin.get("repositoryLocationName"), origin.get("repositoryName")) == (
            self.location,
            self.repository,
        )


class DagsterOrchestrator:
    """One Dagster webserver or Dagster+ deployment.

    Args:
        settings: url, optional token reference and timeout.
        resolve_secret: vault lookup by secret name (raises ``VaultSealed``/``SecretNotFound``).
        transport: an httpx transport (tests pass ``httpx.MockTransport``); default is the network.
    """

    kind = "dagster"

    def __init__(
        self,
        settings: DagsterSettings,
        resolve_secret: Callable[[str], SecretValue],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._resolve_secret = resolve_secret
        self._token_name = secret_name(settings.token) if settings.token else None
        self._client = _rest.http_client(settings, settings.url, transport)

    async def rerun(self, job_id: str, mode: RerunMode, idempotency_key: str) -> RunInfo:
        """Launch ``job_id`` in full, or re-execute its latest run ``FROM_FAILURE``.

        A run already tagged with ``idempotency_key`` is returned instead of launching another.

        Raises:
            JobNotFound: Dagster does not know the location, repository or job.
            RunConflict: ``failed_only`` and the job's latest run did not fail; or Dagster's RunConflict.
            OrchestratorError / OrchestratorUnavailable: refused, unreachable or garbage.
        """
        job = DagsterJobRef(job_id)
        tag = {"key": IDEMPOTENCY_TAG, "value": idempotency_key}
        earlier = await self._runs(job, {"pipelineName": job.name, "tags": [tag]}, limit=1)
        if earlier:
            return self._info(earlier[0])
        if mode == "full":
            params = {"selector": job.selector(), "executionMetadata": {"tags": [tag]}}
            data = await self._graphql(LAUNCH_RUN, {"executionParams": params}, what=f"job `{job_id}`")
            return self._launched(data, "launchRun", job_id)
        latest = await self._runs(job, {"pipelineName": job.name}, limit=1)
        if not latest:
            raise RunConflict(f"dagster job `{job_id}` has no run to re-execute from failure")
        if latest[0].get("status") != "FAILURE":
            info = self._info(latest[0])
            raise RunConflict(
                f"dagster job `{job_id}`: latest run {info.run_id} is {info.state}, "
                "not failed; nothing to re-execute from failure"
            )
        params = {"parentRunId": latest[0]["runId"], "strategy": "FROM_FAILURE", "extraTags": [tag]}
        data = await self._graphql(LAUNCH_REEXECUTION, {"reexecutionParams": params}, what=f"job `{job_id}`")
        return self._launched(data, "launchRunReexecution", job_id)

    async def status(self, job_id: str, run_id: str) -> RunInfo:
        """The current state of run ``run_id`` of ``job_id``.

        Raises:
            JobNotFound: no such run, or it is a run of another job.
        """
        job = DagsterJobRef(job_id)
        data = await self._graphql(RUN_OR_ERROR, {"runId": run_id}, what=f"run `{run_id[:80]}`")
        run = _member(data, "runOrError", "Run", what=f"run `{run_id[:80]}`")
        if not job.owns(run):
            raise JobNotFound(f"dagster run `{run_id[:80]}` is not a run of job `{job_id}`")
        return self._info(run)

    async def failure_context(self, job_id: str, limit: int = 3) -> FailureContext:
        """The ``limit`` most recent failed runs and the log tail (errors first) of the latest one."""
        job = DagsterJobRef(job_id)
        failed = await self._runs(job, {"pipelineName": job.name, "statuses": ["FAILURE"]}, limit=limit)
        runs = [self._info(run) for run in failed]
        tail: tuple[str, ...] = ()
        if runs:
            data = await self._graphql(
                LOGS_FOR_RUN, {"runId": runs[0].run_id, "limit": 1000}, what=f"run `{runs[0].run_id}`"
            )
            events = _member(data, "logsForRun", "EventConnection", what=f"run `{runs[0].run_id}`")
            tail, error = _log_lines(events.get("events"))
            if error is not None:
                first = runs[0]
                runs[0] = RunInfo(
                    first.run_id,
                    first.state,
                    first.native_state,
                    first.started_at,
                    first.ended_at,
                    error,
                    first.url,
                )
        return FailureContext(job=job_id, failed_runs=tuple(runs), log_tail=tail)

    async def aclose(self) -> None:
        await self._client.aclose()

    # ---- helpers ---------------------------------------------------------------------------

    async def _runs(
        self, job: DagsterJobRef, run_filter: Mapping[str, Any], *, limit: int
    ) -> list[dict[str, Any]]:
        """Newest-first runs matching ``run_filter`` that belong to ``job`` (location/repository too)."""
        variables = {"filter": dict(run_filter), "limit": max(limit, _SCAN)}
        data = await self._graphql(RUNS_OR_ERROR, variables, what=f"job `{job.name}`")
        results = _member(data, "runsOrError", "Runs", what=f"job `{job.name}`").get("results")
        if not isinstance(results, list) or not all(isinstance(run, dict) for run in results):
            raise OrchestratorUnavailable("dagster answered runs that are not a list of runs")
        return [run for run in results if job.owns(run)][: max(limit, 1)]

    def _launched(self, data: Mapping[str, Any], field: str, job_id: str) -> RunInfo:
        result = _member(data, field, "LaunchRunSuccess", what=f"job `{job_id}`")
        run = result.get("run")
        if not isinstance(run, dict):
            raise OrchestratorUnavailable("dagster answered LaunchRunSuccess without a run")
        return self._info(run)

    def _info(self, run: Mapping[str, Any]) -> RunInfo:
        run_id, status = run.get("runId"), run.get("status")
        if not isinstance(run_id, str) or not isinstance(status, str):
            raise OrchestratorUnavailable("dagster answered a run without `runId` and `status`")
        return RunInfo(
            run_id=run_id,
            state=STATUS_STATES.get(status, "unknown"),
            native_state=status,
            started_at=_iso(run.get("startTime")),
            ended_at=_iso(run.get("endTime")),
            url=f"{self._settings.url}/runs/{run_id}",
        )

    async def _graphql(self, query: str, variables: Mapping[str, Any], *, what: str) -> Mapping[str, Any]:
        """POST one operation; return ``data`` or raise the mapped error (never naming the token)."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        token = ""
        if self._token_name is not None:
            token = self._resolve_secret(self._token_name).reveal_text()
            headers["Dagster-Cloud-Api-Token"] = token
        try:
            response = await self._client.post(
                "/graphql", json={"query": query, "variables": dict(variables)}, headers=headers
            )
        except BlockedAddress as exc:
            raise _rest.refused(exc, "dagster") from None
        except httpx.TimeoutException as exc:
            raise OrchestratorUnavailable(f"dagster at `{self._settings.url}` timed out") from exc
        except httpx.HTTPError as exc:
            raise OrchestratorUnavailable(
                f"dagster at `{self._settings.url}` is unreachable ({type(exc).__name__})"
            ) from exc
        return _unwrap(response, what=what, token=token)


def _unwrap(response: httpx.Response, *, what: str, token: str) -> Mapping[str, Any]:
    code = response.status_code
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if code in (401, 403):
        raise OrchestratorError(f"dagster refused the credentials ({code})")
    if code == 429 or code >= 500:
        raise OrchestratorUnavailable(f"dagster answered {code} for {what}")
    if not isinstance(body, dict):
        raise OrchestratorUnavailable(f"dagster answered {code} for {what} without a graphql result")
    data = body.get("data")
    if not isinstance(data, dict):
        errors = body.get("errors")
        first = (
            errors[0].get("message")
            if isinstance(errors, list) and errors and isinstance(errors[0], dict)
            else None
        )
        detail = f": {_scrub(first, token)}" if isinstance(first, str) else ""
        raise OrchestratorUnavailable(f"dagster rejected the gateway's query for {what} ({code}){detail}")
    return data


def _member(data: Mapping[str, Any], field: str, expected: str, *, what: str) -> Mapping[str, Any]:
    """The union value at ``data[field]`` if it is ``expected``; otherwise raise its mapped error."""
    value = data.get(field)
    if not isinstance(value, dict) or not isinstance(value.get("__typename"), str):
        raise OrchestratorUnavailable(f"dagster answered `{field}` without a typed result")
    kind = value["__typename"]
    if kind == expected:
        return value
    detail = _error_detail(value)
    if kind in _NOT_FOUND:
        raise JobNotFound(f"dagster has no {what} ({kind}){detail}")
    if kind == "RunConflict":
        raise RunConflict(f"dagster refused {what} (RunConflict){detail}")
    if kind == "PythonError":
        raise OrchestratorUnavailable(f"dagster failed on {what} (PythonError){detail}")
    raise OrchestratorError(f"dagster refused {what} ({kind}){detail}")


def _error_detail(value: Mapping[str, Any]) -> str:
    message = value.get("message")
    if not isinstance(message, str):
        if isinstance(value.get("invalidStepKey"), str):
            message = f"invalid step `{value['invalidStepKey']}`"
        elif isinstance(value.get("errors"), list):
            messages = [e.get("message") for e in value["errors"] if isinstance(e, dict)]
            message = "; ".join(m for m in messages if isinstance(m, str))
    return f": {message.strip()[:_MESSAGE_MAX]}" if isinstance(message, str) and message.strip() else ""


def _log_lines(events: Any) -> tuple[tuple[str, ...], str | None]:
    """The last log lines of a run, and the first error message (the step failure) if any."""
    if not isinstance(events, list):
        return (), None
    lines: list[str] = []
    first_error: str | None = None
    for event in events:
        if not isinstance(event, dict):
            continue
        step = f"[{event['stepKey']}] " if isinstance(event.get("stepKey"), str) else ""
        if isinstance(event.get("message"), str):
            lines.append(f"{event.get('level', 'INFO')} {step}{event['message']}")
        error = event.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            lines.append(f"ERROR {step}{error['message'].strip()}")
            if first_error is None:
                first_error = error["message"].strip()[:_MESSAGE_MAX]
    return tuple(lines[-_LOG_TAIL_LINES:]), first_error


def _scrub(text: str, token: str) -> str:
    return (text.replace(token, "[redacted]") if token else text)[:_MESSAGE_MAX]


def _iso(timestamp: Any) -> str | None:
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        return datetime.fromtimestamp(timestamp, UTC).isoformat()
    return None
