"""A Dagster webserver GraphQL emulator: a test/demo double, never a real service.

``POST /graphql`` executes queries with graphql-core against a faithful subset of Dagster's schema
(same type, field, union, enum and input names), so a query that would not validate against
Dagster fails here too (HTTP 400 with ``{"errors": [...]}``). Served: ``launchRun``,
``launchRunReexecution`` (``ALL_STEPS`` / ``FROM_FAILURE``), ``runOrError``, ``runsOrError``
(filter by ``runIds``, ``pipelineName``, ``statuses``, ``tags``) and ``logsForRun``. ``GET
/server_info`` answers like the webserver's. With a ``token`` every request must carry it in the
``Dagster-Cloud-Api-Token`` header (HTTP 401 otherwise), as Dagster+ does.

Runs advance one state on every ``runOrError`` read: QUEUED → STARTING → STARTED → SUCCESS or
FAILURE. A job with ``fail_first_run`` fails its first run at ``failing_op`` and succeeds on every
later run, so "fail, re-execute from failure, succeed" is deterministic without clocks or sleeps.
"""

from __future__ import annotations

import hmac
import itertools
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLError, build_schema, graphql_sync
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SCHEMA_SDL = """
type Query {
  version: String!
  runOrError(runId: ID!): RunOrError!
  runsOrError(filter: RunsFilter, cursor: String, limit: Int): RunsOrError!
  logsForRun(runId: ID!, afterCursor: String, limit: Int): EventConnectionOrError!
}
type Mutation {
  launchRun(executionParams: ExecutionParams!): LaunchRunResult!
  launchRunReexecution(executionParams: ExecutionParams, reexecutionParams: ReexecutionParams):
    LaunchRunReexecutionResult!
}
scalar RunConfigData
enum RunStatus { QUEUED NOT_STARTED MANAGED STARTING STARTED SUCCESS FAILURE CANCELING CANCELED }
enum ReexecutionStrategy { FROM_FAILURE FROM_ASSET_FAILURE ALL_STEPS }
enum LogLevel { CRITICAL ERROR INFO WARNING DEBUG }
enum EvaluationErrorReason {
  RUNTIME_TYPE_MISMATCH MISSING_REQUIRED_FIELD MISSING_REQUIRED_FIELDS FIELD_NOT_DEFINED
  FIELDS_NOT_DEFINED SELECTOR_FIELD_ERROR
}
enum DagsterEventType {
  STEP_START STEP_SUCCESS STEP_FAILURE STEP_SKIPPED RUN_ENQUEUED RUN_DEQUEUED RUN_STARTING RUN_START
  RUN_SUCCESS RUN_FAILURE RUN_CANCELING RUN_CANCELED ENGINE_EVENT
}
input ExecutionTag { key: String! value: String! }
input JobOrPipelineSelector {
  pipelineName: String jobName: String repositoryName: String! repositoryLocationName: String!
  solidSelection: [String!]
}
input ExecutionMetadata { runId: String tags: [ExecutionTag!] rootRunId: String parentRunId: String }
input ExecutionParams {
  selector: JobOrPipelineSelector! runConfigData: RunConfigData mode: String
  executionMetadata: ExecutionMetadata stepKeys: [String!] preset: String
}
input ReexecutionParams {
  parentRunId: String! strategy: ReexecutionStrategy! extraTags: [ExecutionTag!] useParentRunTags: Boolean
}
input RunsFilter {
  runIds: [String] pipelineName: String tags: [ExecutionTag!] statuses: [RunStatus!] snapshotId: String
  updatedAfter: Float updatedBefore: Float createdBefore: Float createdAfter: Float mode: String
}
interface Error { message: String! }
type PythonError implements Error { message: String! className: String stack: [String!]! }
type RunNotFoundError implements Error { runId: String! message: String! }
type PipelineNotFoundError implements Error {
  message: String! pipelineName: String! repositoryName: String! repositoryLocationName: String!
}
type RunConflict implements Error { message: String! }
type UnauthorizedError implements Error { message: String! }
type InvalidSubsetError implements Error { message: String! }
type PresetNotFoundError implements Error { preset: String! message: String! }
type ConflictingExecutionParamsError implements Error { message: String! }
type NoModeProvidedError implements Error { pipelineName: String! message: String! }
type InvalidPipelineRunsFilterError implements Error { message: String! }
type InvalidStepError { invalidStepKey: String! }
type InvalidOutputError { stepKey: String! invalidOutputName: String! }
interface PipelineConfigValidationError { message: String! path: [String!]! reason: EvaluationErrorReason! }
type FieldNotDefinedConfigError implements PipelineConfigValidationError {
  message: String! path: [String!]! reason: EvaluationErrorReason! fieldName: String!
}
type RunConfigValidationInvalid { pipelineName: String! errors: [PipelineConfigValidationError!]! }
type PipelineTag { key: String! value: String! }
type RepositoryOrigin { id: String! repositoryLocationName: String! repositoryName: String! }
type Run {
  id: ID! runId: String! status: RunStatus! jobName: String! pipelineName: String!
  repositoryOrigin: RepositoryOrigin tags: [PipelineTag!]! rootRunId: String parentRunId: String
  startTime: Float endTime: Float updateTime: Float creationTime: Float! runConfigYaml: String!
  stepKeysToExecute: [String!] canTerminate: Boolean!
}
type Runs { results: [Run!]! count: Int }
type LaunchRunSuccess { run: Run! }
interface MessageEvent {
  runId: String! message: String! timestamp: String! level: LogLevel! stepKey: String
  eventType: DagsterEventType
}
type ExecutionStepStartEvent implements MessageEvent {
  $MESSAGE_FIELDS
}
type ExecutionStepSuccessEvent implements MessageEvent {
  $MESSAGE_FIELDS
}
type ExecutionStepSkippedEvent implements MessageEvent {
  $MESSAGE_FIELDS
}
type ExecutionStepFailureEvent implements MessageEvent {
  $MESSAGE_FIELDS
  error: PythonError
}
type RunEnqueuedEvent implements MessageEvent {
  $MESSAGE_FIELDS
  pipelineName: String!
}
type RunStartEvent implements MessageEvent {
  $MESSAGE_FIELDS
  pipelineName: String!
}
type RunSuccessEvent implements MessageEvent {
  $MESSAGE_FIELDS
  pipelineName: String!
}
type RunFailureEvent implements MessageEvent {
  $MESSAGE_FIELDS
  pipelineName: String! error: PythonError
}
union DagsterRunEvent = ExecutionStepStartEvent | ExecutionStepSuccessEvent | ExecutionStepSkippedEvent
  | ExecutionStepFailureEvent | RunEnqueuedEvent | RunStartEvent | RunSuccessEvent | RunFailureEvent
type EventConnection { events: [DagsterRunEvent!]! cursor: String! hasMore: Boolean! }
union LaunchRunResult = LaunchRunSuccess | InvalidStepError | InvalidOutputError | RunConfigValidationInvalid
  | PipelineNotFoundError | RunConflict | UnauthorizedError | PythonError | InvalidSubsetError
  | PresetNotFoundError | ConflictingExecutionParamsError | NoModeProvidedError
union LaunchRunReexecutionResult = LaunchRunSuccess | InvalidStepError | InvalidOutputError
  | RunConfigValidationInvalid | PipelineNotFoundError | RunConflict | UnauthorizedError | PythonError
  | InvalidSubsetError | PresetNotFoundError | ConflictingExecutionParamsError | NoModeProvidedError
union RunOrError = Run | RunNotFoundError | PythonError
union RunsOrError = Runs | InvalidPipelineRunsFilterError | PythonError
union EventConnectionOrError = EventConnection | RunNotFoundError | PythonError
""".replace(
    "$MESSAGE_FIELDS",
    "runId: String! message: String! timestamp: String! level: LogLevel! stepKey: String\n"
    "  eventType: DagsterEventType",
)

_ADVANCE = {"QUEUED": "STARTING", "STARTING": "STARTED"}
_RUN_CONFIG_KEYS = {"ops", "solids", "resources", "execution", "loggers"}


@dataclass(frozen=True)
class DagsterJob:
    """One emulated job (ops run in order; an op's failure skips the ops after it).

    Attributes:
        location / repository / name: where the job lives, as in the selector.
        ops: op (step) keys in execution order.
        fail_first_run: the job's first run fails at ``failing_op``; later runs succeed.
        failing_op: the op that fails.
        error_message: the step failure's error text.
    """

    location: str
    repository: str
    name: str
    ops: tuple[str, ...] = ("extract", "transform", "load")
    fail_first_run: bool = False
    failing_op: str = "transform"
    error_message: str = "KeyError: 'order_id' (raised in op 'transform')"


@dataclass
class _Run:
    run_id: str
    job: DagsterJob
    steps: tuple[str, ...]
    fail_at: str | None
    tags: dict[str, str]
    created: float
    parent: str | None = None
    root: str | None = None
    status: str = "QUEUED"
    start: float | None = None
    end: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


class DagsterEmulator:
    """In-memory Dagster instance with a fixed set of jobs.

    Args:
        jobs: the jobs the workspace knows.
        token: when set, the ``Dagster-Cloud-Api-Token`` every request must carry.
    """

    def __init__(self, jobs: Sequence[DagsterJob], *, token: str | None = None) -> None:
        self.jobs = {(job.location, job.repository, job.name): job for job in jobs}
        self.runs: dict[str, _Run] = {}
        self.operations: list[str] = []
        self._token = token
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.schema = build_schema(SCHEMA_SDL)
        self.app = Starlette(
            routes=[
                Route("/graphql", self._graphql, methods=["POST"]),
                Route("/server_info", self._server_info, methods=["GET"]),
            ]
        )

    # ---- HTTP --------------------------------------------------------------------------------

    async def _graphql(self, request: Request) -> JSONResponse:
        if self._token is not None:
            presented = request.headers.get("dagster-cloud-api-token", "")
            if not hmac.compare_digest(presented.encode(), self._token.encode()):
                return JSONResponse(
                    {"errors": [{"message": "Unauthorized: invalid or missing API token"}]}, 401
                )
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return JSONResponse({"errors": [{"message": "POST body must be a JSON object"}]}, 400)
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return JSONResponse({"errors": [{"message": "Must provide query string."}]}, 400)
        variables = body.get("variables")
        with self._lock:
            result = graphql_sync(
                self.schema,
                body["query"],
                root_value=self,
                variable_values=variables if isinstance(variables, dict) else None,
                operation_name=body.get("operationName"),
            )
        payload: dict[str, Any] = {}
        if result.errors:
            payload["errors"] = [_format_error(error) for error in result.errors]
        if result.data is None:
            return JSONResponse(payload, 400)
        payload["data"] = result.data
        return JSONResponse(payload)

    async def _server_info(self, request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "dagster_webserver_version": "emulator",
                "dagster_version": "emulator",
                "dagster_graphql_version": "emulator",
            }
        )

    # ---- root resolvers (graphql-core's default resolver calls these with info + arguments) ----

    def version(self, info: Any) -> str:
        return "emulator"

    def launchRun(self, info: Any, executionParams: Mapping[str, Any]) -> dict[str, Any]:
        self.operations.append("launchRun")
        return self._launch(executionParams, parent=None, strategy=None, extra_tags=())

    def launchRunReexecution(
        self,
        info: Any,
        executionParams: Mapping[str, Any] | None = None,
        reexecutionParams: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.operations.append("launchRunReexecution")
        if reexecutionParams is None:
            if executionParams is None:
                return _python_error(
                    "DagsterInvariantViolationError", "Must provide executionParams or reexecutionParams"
                )
            return self._launch(executionParams, parent=None, strategy=None, extra_tags=())
        parent = self.runs.get(reexecutionParams["parentRunId"])
        if parent is None:
            return _python_error(
                "DagsterRunNotFoundError", f"Run {reexecutionParams['parentRunId']} could not be found"
            )
        strategy = reexecutionParams["strategy"]
        if strategy == "FROM_FAILURE" and parent.status != "FAILURE":
            return _python_error(
                "DagsterInvariantViolationError", "Cannot reexecute from failure a run that is not failed"
            )
        selector = {
            "repositoryLocationName": parent.job.location,
            "repositoryName": parent.job.repository,
            "jobName": parent.job.name,
        }
        return self._launch(
            {"selector": selector},
            parent=parent,
            strategy=strategy,
            extra_tags=reexecutionParams.get("extraTags") or (),
        )

    def runOrError(self, info: Any, runId: str) -> dict[str, Any]:
        run = self.runs.get(runId)
        if run is None:
            return {
                "__typename": "RunNotFoundError",
                "runId": runId,
                "message": f"Run {runId} could not be found.",
            }
        self._advance(run)
        return self._run_json(run)

    def runsOrError(
        self,
        info: Any,
        filter: Mapping[str, Any] | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        wanted = dict(filter or {})
        tags = {tag["key"]: tag["value"] for tag in wanted.get("tags") or ()}
        runs = [
            run
            for run in self.runs.values()
            if (not wanted.get("runIds") or run.run_id in wanted["runIds"])
            and (not wanted.get("pipelineName") or run.job.name == wanted["pipelineName"])
            and (not wanted.get("statuses") or run.status in wanted["statuses"])
            and all(run.tags.get(key) == value for key, value in tags.items())
        ]
        runs.sort(key=lambda run: run.created, reverse=True)
        if cursor is not None:
            ids = [run.run_id for run in runs]
            runs = runs[ids.index(cursor) + 1 :] if cursor in ids else []
        if limit is not None:
            runs = runs[:limit]
        return {"__typename": "Runs", "results": [self._run_json(run) for run in runs], "count": len(runs)}

    def logsForRun(
        self, info: Any, runId: str, afterCursor: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        run = self.runs.get(runId)
        if run is None:
            return {
                "__typename": "RunNotFoundError",
                "runId": runId,
                "message": f"Run {runId} could not be found.",
            }
        start = int(afterCursor) + 1 if afterCursor and afterCursor.isdigit() else 0
        events = run.events[start:]
        page = events[:limit] if limit is not None else events
        return {
            "__typename": "EventConnection",
            "events": page,
            "cursor": str(start + len(page) - 1),
            "hasMore": len(page) < len(events),
        }

    # ---- state ------------------------------------------------------------------------------

    def _launch(
        self,
        params: Mapping[str, Any],
        *,
        parent: _Run | None,
        strategy: str | None,
        extra_tags: Sequence[Mapping[str, str]],
    ) -> dict[str, Any]:
        selector = params["selector"]
        name = selector.get("jobName") or selector.get("pipelineName")
        if not name:
            return _python_error("DagsterInvariantViolationError", "Must provide jobName or pipelineName")
        key = (selector["repositoryLocationName"], selector["repositoryName"], name)
        job = self.jobs.get(key)
        if job is None:
            return {
                "__typename": "PipelineNotFoundError",
                "message": f"Could not find Pipeline {key[0]}.{key[1]}.{name}",
                "pipelineName": name,
                "repositoryName": key[1],
                "repositoryLocationName": key[0],
            }
        config = params.get("runConfigData")
        if isinstance(config, dict) and set(config) - _RUN_CONFIG_KEYS:
            unknown = sorted(set(config) - _RUN_CONFIG_KEYS)[0]
            error = {
                "__typename": "FieldNotDefinedConfigError",
                "message": f'Received unexpected config entry "{unknown}" at the root.',
                "path": [],
                "reason": "FIELD_NOT_DEFINED",
                "fieldName": unknown,
            }
            return {"__typename": "RunConfigValidationInvalid", "pipelineName": name, "errors": [error]}
        steps = job.ops
        tags = {tag["key"]: tag["value"] for tag in (params.get("executionMetadata") or {}).get("tags") or ()}
        if parent is not None:
            if strategy == "FROM_FAILURE" and parent.fail_at is not None:
                steps = parent.steps[parent.steps.index(parent.fail_at) :]
            root = parent.root or parent.run_id
            tags.update({"dagster/parent_run_id": parent.run_id, "dagster/root_run_id": root})
            if strategy == "FROM_FAILURE":
                tags["dagster/is_resume_retry"] = "true"
        tags.update({tag["key"]: tag["value"] for tag in extra_tags})
        first = not any(run.job is job for run in self.runs.values())
        fail_at = job.failing_op if job.fail_first_run and first and job.failing_op in steps else None
        run_id = f"{next(self._ids):08x}-0000-4000-8000-{len(self.runs):012x}"
        run = _Run(run_id, job, steps, fail_at, tags, time.time(), parent.run_id if parent else None)
        run.root = (parent.root or parent.run_id) if parent else None
        self.runs[run_id] = run
        self._event(run, "RunEnqueuedEvent", "RUN_ENQUEUED", "Run enqueued.")
        return {"__typename": "LaunchRunSuccess", "run": self._run_json(run)}

    def _advance(self, run: _Run) -> None:
        if run.status in _ADVANCE:
            run.status = _ADVANCE[run.status]
            if run.status == "STARTED":
                run.start = time.time()
                self._event(
                    run, "RunStartEvent", "RUN_START", f'Started execution of run for "{run.job.name}".'
                )
            return
        if run.status != "STARTED":
            return
        failed = False
        for step in run.steps:
            if failed:
                self._event(
                    run,
                    "ExecutionStepSkippedEvent",
                    "STEP_SKIPPED",
                    f'Skipped execution of step "{step}".',
                    step,
                )
                continue
            self._event(
                run, "ExecutionStepStartEvent", "STEP_START", f'Started execution of step "{step}".', step
            )
            if step == run.fail_at:
                failed = True
                error = {"message": run.job.error_message, "className": "KeyError", "stack": []}
                self._event(
                    run,
                    "ExecutionStepFailureEvent",
                    "STEP_FAILURE",
                    f'Execution of step "{step}" failed.',
                    step,
                    error,
                )
            else:
                self._event(
                    run,
                    "ExecutionStepSuccessEvent",
                    "STEP_SUCCESS",
                    f'Finished execution of step "{step}".',
                    step,
                )
        run.end = time.time()
        if failed:
            run.status = "FAILURE"
            message = f"Execution of run for \"{run.job.name}\" failed. Steps failed: ['{run.fail_at}']."
            self._event(run, "RunFailureEvent", "RUN_FAILURE", message)
        else:
            run.status = "SUCCESS"
            self._event(
                run, "RunSuccessEvent", "RUN_SUCCESS", f'Finished execution of run for "{run.job.name}".'
            )

    def _event(
        self,
        run: _Run,
        typename: str,
        event_type: str,
        message: str,
        step: str | None = None,
        error: Mapping[str, Any] | None = None,
    ) -> None:
        event: dict[str, Any] = {
            "__typename": typename,
            "runId": run.run_id,
            "message": message,
            "timestamp": str(int(time.time() * 1000)),
            "level": "ERROR" if error is not None or event_type == "RUN_FAILURE" else "DEBUG",
            "stepKey": step,
            "eventType": event_type,
            "pipelineName": run.job.name,
        }
        if error is not None:
            event["error"] = {"__typename": "PythonError", **error}
        self.runs[run.run_id].events.append(event)

    def _run_json(self, run: _Run) -> dict[str, Any]:
        job = run.job
        return {
            "__typename": "Run",
            "id": run.run_id,
            "runId": run.run_id,
            "status": run.status,
            "jobName": job.name,
            "pipelineName": job.name,
            "repositoryOrigin": {
                "id": f"{job.location}:{job.repository}",
                "repositoryLocationName": job.location,
                "repositoryName": job.repository,
            },
            "tags": [{"key": key, "value": value} for key, value in run.tags.items()],
            "rootRunId": run.root,
            "parentRunId": run.parent,
            "startTime": run.start,
            "endTime": run.end,
            "updateTime": run.end or run.start or run.created,
            "creationTime": run.created,
            "runConfigYaml": "{}\n",
            "stepKeysToExecute": list(run.steps) if run.parent else None,
            "canTerminate": run.status in ("QUEUED", "STARTING", "STARTED"),
        }


def _python_error(class_name: str, message: str) -> dict[str, Any]:
    return {
        "__typename": "PythonError",
        "message": f"{class_name}: {message}\n",
        "className": class_name,
        "stack": [],
    }


def _format_error(error: GraphQLError) -> dict[str, Any]:
    formatted: dict[str, Any] = {"message": error.message}
    if error.locations:
        formatted["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    if error.path:
        formatted["path"] = list(error.path)
    return formatted
