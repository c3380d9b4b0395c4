"""The Dagster emulator's run model (``dagster.py`` serves it): jobs, runs and their state machine.

Runs advance one state on every ``runOrError`` read: QUEUED → STARTING → STARTED → SUCCESS or
FAILURE. A job with ``fail_first_run`` fails its first run at ``failing_op`` and succeeds on every
later run, so "fail, re-execute from failure, succeed" is deterministic without clocks or sleeps.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
class DagsterRun:
    """One emulated run and the events it has logged so far."""

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


class DagsterRuns:
    """The runs of an in-memory Dagster instance with a fixed set of jobs.

    Args:
        jobs: the jobs the workspace knows.
    """

    def __init__(self, jobs: Sequence[DagsterJob]) -> None:
        self.jobs = {(job.location, job.repository, job.name): job for job in jobs}
        self.runs: dict[str, DagsterRun] = {}
        self._ids = itertools.count(1)

    def launch(
        self,
        params: Mapping[str, Any],
        *,
        parent: DagsterRun | None,
        strategy: str | None,
        extra_tags: Sequence[Mapping[str, str]],
    ) -> dict[str, Any]:
        """Start a run of the job ``params["selector"]`` names (re-executing ``parent`` when given).

        Returns the ``launchRun`` result: ``LaunchRunSuccess`` or the error Dagster would answer.
        """
        selector = params["selector"]
        name = selector.get("jobName") or selector.get("pipelineName")
        if not name:
            return python_error("DagsterInvariantViolationError", "Must provide jobName or pipelineName")
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
        run = DagsterRun(run_id, job, steps, fail_at, tags, time.time(), parent.run_id if parent else None)
        run.root = (parent.root or parent.run_id) if parent else None
        self.runs[run_id] = run
        self._event(run, "RunEnqueuedEvent", "RUN_ENQUEUED", "Run enqueued.")
        return {"__typename": "LaunchRunSuccess", "run": self.run_json(run)}

    def advance(self, run: DagsterRun) -> None:
        """Move ``run`` one state on; a ``STARTED`` run executes its steps and finishes."""
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
        run: DagsterRun,
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

    def run_json(self, run: DagsterRun) -> dict[str, Any]:
        """``run`` as the GraphQL ``Run`` object."""
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


def python_error(class_name: str, message: str) -> dict[str, Any]:
    """A ``PythonError`` result, as Dagster reports a failure inside the webserver."""
    return {
        "__typename": "PythonError",
        "message": f"{class_name}: {message}\n",
        "className": class_name,
        "stack": [],
    }
