"""A Dagster webserver GraphQL emulator: a test/demo double, never a real service.

``POST /graphql`` executes queries with graphql-core against a faithful subset of Dagster's schema
(same type, field, union, enum and input names), so a query that would not validate against
Dagster fails here too (HTTP 400 with ``{"errors": [...]}``). Served: ``launchRun``,
``launchRunReexecution`` (``ALL_STEPS`` / ``FROM_FAILURE``), ``runOrError``, ``runsOrError``
(filter by ``runIds``, ``pipelineName``, ``statuses``, ``tags``) and ``logsForRun``. ``GET
/server_info`` answers like the webserver's. With a ``token`` every request must carry it in the
``Dagster-Cloud-Api-Token`` header (HTTP 401 otherwise), as Dagster+ does.

Jobs, runs and how runs advance: ``dagster_runs.py``; the schema: ``dagster_schema.py``.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from graphql import GraphQLError, build_schema, graphql_sync
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mcp_gateway.demo.emulators.dagster_runs import DagsterJob, DagsterRun, DagsterRuns, python_error
from mcp_gateway.demo.emulators.dagster_schema import SCHEMA_SDL


class DagsterEmulator:
    """In-memory Dagster instance with a fixed set of jobs.

    Args:
        jobs: the jobs the workspace knows.
        token: when set, the ``Dagster-Cloud-Api-Token`` every request must carry.
    """

    def __init__(self, jobs: Sequence[DagsterJob], *, token: str | None = None) -> None:
        self._state = DagsterRuns(jobs)
        self.operations: list[str] = []
        self._token = token
        self._lock = threading.Lock()
        self.schema = build_schema(SCHEMA_SDL)
        self.app = Starlette(
            routes=[
                Route("/graphql", self._graphql, methods=["POST"]),
                Route("/server_info", self._server_info, methods=["GET"]),
            ]
        )

    @property
    def jobs(self) -> dict[tuple[str, str, str], DagsterJob]:
        """The jobs the workspace knows, by (location, repository, name)."""
        return self._state.jobs

    @property
    def runs(self) -> dict[str, DagsterRun]:
        """Every run launched so far, by run id."""
        return self._state.runs

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
        return self._state.launch(executionParams, parent=None, strategy=None, extra_tags=())

    def launchRunReexecution(
        self,
        info: Any,
        executionParams: Mapping[str, Any] | None = None,
        reexecutionParams: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.operations.append("launchRunReexecution")
        if reexecutionParams is None:
            if executionParams is None:
                return python_error(
                    "DagsterInvariantViolationError", "Must provide executionParams or reexecutionParams"
                )
            return self._state.launch(executionParams, parent=None, strategy=None, extra_tags=())
        parent = self.runs.get(reexecutionParams["parentRunId"])
        if parent is None:
            return python_error(
                "DagsterRunNotFoundError", f"Run {reexecutionParams['parentRunId']} could not be found"
            )
        strategy = reexecutionParams["strategy"]
        if strategy == "FROM_FAILURE" and parent.status != "FAILURE":
            return python_error(
                "DagsterInvariantViolationError", "Cannot reexecute from failure a run that is not failed"
            )
        selector = {
            "repositoryLocationName": parent.job.location,
            "repositoryName": parent.job.repository,
            "jobName": parent.job.name,
        }
        return self._state.launch(
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
        self._state.advance(run)
        return self._state.run_json(run)

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
        return {
            "__typename": "Runs",
            "results": [self._state.run_json(run) for run in runs],
            "count": len(runs),
        }

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


def _format_error(error: GraphQLError) -> dict[str, Any]:
    formatted: dict[str, Any] = {"message": error.message}
    if error.locations:
        formatted["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    if error.path:
        formatted["path"] = list(error.path)
    return formatted
