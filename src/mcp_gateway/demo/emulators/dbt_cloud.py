"""A dbt Cloud Administrative API v2 emulator: a test/demo double, never a real service.

Speaks the documented contract for the endpoints the gateway's adapter uses:

    POST /api/v2/accounts/{account_id}/jobs/{job_id}/run/     body {"cause": "..."} (cause required)
    POST /api/v2/accounts/{account_id}/jobs/{job_id}/rerun/   rerun the latest run from its failure,
                                                              or trigger a new run if it did not fail
    GET  /api/v2/accounts/{account_id}/runs/                  job_definition_id, status, status__in,
                                                              order_by (id / -id), limit (<=100), offset
    GET  /api/v2/accounts/{account_id}/runs/{run_id}/         include_related=["run_steps", "trigger"]

Every answer is the envelope ``{"status": {"code", "is_success", "user_message",
"developer_message"}, "data": ...}``; errors keep it with ``data: null`` (401 bad or missing token,
403 another account, 404 unknown job/run/path, 400 invalid body).

Runs advance one state on every ``GET runs/{id}/``: Queued (1) → Starting (2) → Running (3) →
Success (10) or Error (20). A job with ``fail_first_run`` errors on its first run (at its
``failing_step``) and succeeds on every later run, so "fail, rerun from failure, succeed" is
deterministic without clocks or sleeps.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

QUEUED, STARTING, RUNNING, SUCCESS, ERROR, CANCELLED = 1, 2, 3, 10, 20, 30
HUMANIZED = {
    QUEUED: "Queued",
    STARTING: "Starting",
    RUNNING: "Running",
    SUCCESS: "Success",
    ERROR: "Error",
    CANCELLED: "Cancelled",
}
_NEXT = {QUEUED: STARTING, STARTING: RUNNING}


@dataclass(frozen=True)
class DbtJob:
    """One emulated job.

    Attributes:
        name: the job's name.
        steps: dbt commands run in order.
        fail_first_run: the job's first run errors at ``failing_step``; later runs succeed.
        failing_step: index into ``steps`` of the step that fails.
        error_message: the run's ``status_message`` when it errors.
    """

    name: str
    steps: tuple[str, ...] = ("dbt deps", "dbt build")
    fail_first_run: bool = False
    failing_step: int = -1
    error_message: str = (
        "Database Error in model orders (models/orders.sql): relation raw.orders does not exist"
    )


@dataclass
class _Run:
    id: int
    job_id: int
    cause: str
    steps: tuple[str, ...]
    will_fail_at: int | None  # index into steps, or None to succeed
    status: int = QUEUED
    created_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    rerun_of: int | None = None
    step_status: list[int] = field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00:00")


class DbtCloudEmulator:
    """In-memory dbt Cloud account.

    Args:
        account_id: the only account this emulator serves.
        token: the service token every request must carry (``Token`` or ``Bearer`` scheme).
        jobs: job id → job.
        href_base: base of the ``href`` links in run objects; default: the emulator's own address as
            the request reached it (a double must not send anyone to the real dbt Cloud).
    """

    def __init__(
        self,
        *,
        account_id: int,
        token: str,
        jobs: Mapping[int, DbtJob],
        href_base: str | None = None,
        environment_id: int = 7,
        project_id: int = 3,
    ) -> None:
        self.account_id = account_id
        self.jobs = dict(jobs)
        self.runs: dict[int, _Run] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self._token = token
        self._href_base = href_base.rstrip("/") if href_base is not None else None
        self._environment_id = environment_id
        self._project_id = project_id
        self._next_id = 1000
        self._lock = threading.Lock()
        prefix = "/api/v2/accounts/{account_id:int}"
        self.app = Starlette(
            routes=[
                Route(prefix + "/jobs/{job_id:int}/run/", self._trigger, methods=["POST"]),
                Route(prefix + "/jobs/{job_id:int}/rerun/", self._rerun, methods=["POST"]),
                Route(prefix + "/runs/", self._list_runs, methods=["GET"]),
                Route(prefix + "/runs/{run_id:int}/", self._get_run, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self._http_error},
        )

    # ---- handlers ---------------------------------------------------------------------------

    async def _trigger(self, request: Request) -> JSONResponse:
        denied = self._guard(request)
        if denied is not None:
            return denied
        job_id = int(request.path_params["job_id"])
        body = await _json_body(request)
        self.requests.append(("POST", request.url.path, body))
        if job_id not in self.jobs:
            return _error(404, "The requested resource was not found.")
        cause = body.get("cause") if isinstance(body, dict) else None
        if not isinstance(cause, str) or not cause.strip():
            return _error(400, "The request was invalid.", data={"cause": ["This field is required."]})
        with self._lock:
            run = self._new_run(job_id, cause, self.jobs[job_id].steps)
        return _ok(self._run_json(run, request, related=("trigger",)))

    async def _rerun(self, request: Request) -> JSONResponse:
        denied = self._guard(request)
        if denied is not None:
            return denied
        job_id = int(request.path_params["job_id"])
        self.requests.append(("POST", request.url.path, None))
        if job_id not in self.jobs:
            return _error(404, "The requested resource was not found.")
        job = self.jobs[job_id]
        with self._lock:
            previous = [run for run in self.runs.values() if run.job_id == job_id]
            latest = max(previous, key=lambda run: run.id) if previous else None
            if latest is not None and latest.status == ERROR and latest.will_fail_at is not None:
                # Resume at the failed step: it and the steps it skipped run again.
                start = job.steps.index(latest.steps[latest.will_fail_at])
                run = self._new_run(job_id, f"Rerun of run {latest.id} from failure", job.steps[start:])
                run.rerun_of = latest.id
            else:
                run = self._new_run(job_id, "Triggered via API (rerun)", job.steps)
        return _ok(self._run_json(run, request, related=("trigger",)))

    async def _list_runs(self, request: Request) -> JSONResponse:
        denied = self._guard(request)
        if denied is not None:
            return denied
        query = request.query_params
        try:
            job_filter = _opt_int(query.get("job_definition_id"))
            status_filter = _opt_int(query.get("status"))
            status_in = _int_list(query.get("status__in"))
            limit = min(_opt_int(query.get("limit")) or 100, 100)
            offset = _opt_int(query.get("offset")) or 0
        except ValueError:
            return _error(400, "The request was invalid.", data={"detail": ["Invalid query parameter."]})
        order_by = query.get("order_by", "id")
        if order_by not in ("id", "-id"):
            return _error(400, "The request was invalid.", data={"order_by": ["Invalid ordering."]})
        related = _related(query.get("include_related"))
        with self._lock:
            runs = [
                run
                for run in self.runs.values()
                if (job_filter is None or run.job_id == job_filter)
                and (status_filter is None or run.status == status_filter)
                and (status_in is None or run.status in status_in)
            ]
            runs.sort(key=lambda run: run.id, reverse=order_by == "-id")
            page = [self._run_json(run, request, related=related) for run in runs[offset : offset + limit]]
        extra = {
            "filters": {k: v for k, v in query.items() if k not in ("limit", "offset", "order_by")},
            "order_by": order_by,
            "pagination": {"count": len(page), "total_count": len(runs)},
        }
        return _ok(page, extra=extra)

    async def _get_run(self, request: Request) -> JSONResponse:
        denied = self._guard(request)
        if denied is not None:
            return denied
        run_id = int(request.path_params["run_id"])
        with self._lock:
            run = self.runs.get(run_id)
            if run is None:
                return _error(404, "The requested resource was not found.")
            self._advance(run)
            return _ok(
                self._run_json(run, request, related=_related(request.query_params.get("include_related")))
            )

    async def _http_error(self, request: Request, exc: Exception) -> JSONResponse:
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        return _error(code, "The requested resource was not found." if code == 404 else "Request failed.")

    # ---- state ------------------------------------------------------------------------------

    def _guard(self, request: Request) -> JSONResponse | None:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme not in ("Token", "Bearer") or not hmac.compare_digest(
            presented.strip().encode(), self._token.encode()
        ):
            return _error(401, "Invalid token.")
        if int(request.path_params["account_id"]) != self.account_id:
            return _error(403, "You do not have permission to access this account.")
        return None

    def _new_run(self, job_id: int, cause: str, steps: tuple[str, ...]) -> _Run:
        job = self.jobs[job_id]
        first = not any(run.job_id == job_id for run in self.runs.values())
        fail_at = job.failing_step % len(job.steps) if job.fail_first_run and first else None
        self._next_id += 1
        run = _Run(self._next_id, job_id, cause, steps, fail_at, created_at=_now())
        run.step_status = [QUEUED] * len(steps)
        self.runs[run.id] = run
        return run

    def _advance(self, run: _Run) -> None:
        if run.status in _NEXT:
            run.status = _NEXT[run.status]
            if run.status == RUNNING:
                run.started_at = _now()
            return
        if run.status != RUNNING:
            return
        run.finished_at = _now()
        if run.will_fail_at is None:
            run.status = SUCCESS
            run.step_status = [SUCCESS] * len(run.steps)
        else:
            run.status = ERROR
            run.step_status = [
                SUCCESS if i < run.will_fail_at else ERROR if i == run.will_fail_at else CANCELLED
                for i in range(len(run.steps))
            ]

    def _run_json(self, run: _Run, request: Request, *, related: tuple[str, ...] = ()) -> dict[str, Any]:
        job = self.jobs[run.job_id]
        base = self._href_base or str(request.base_url).rstrip("/")
        done = run.status in (SUCCESS, ERROR, CANCELLED)
        data: dict[str, Any] = {
            "id": run.id,
            "trigger_id": run.id + 5000,
            "account_id": self.account_id,
            "environment_id": self._environment_id,
            "project_id": self._project_id,
            "job_definition_id": run.job_id,
            "job_id": run.job_id,
            "status": run.status,
            "status_humanized": HUMANIZED[run.status],
            "status_message": job.error_message if run.status == ERROR else None,
            "dbt_version": "1.9.0",
            "git_branch": "main",
            "git_sha": "0d6f1c2",
            "created_at": run.created_at,
            "updated_at": run.finished_at or run.started_at or run.created_at,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "in_progress": not done,
            "is_complete": done,
            "is_success": run.status == SUCCESS,
            "is_error": run.status == ERROR,
            "is_cancelled": run.status == CANCELLED,
            "is_running": run.status == RUNNING,
            "can_retry": run.status == ERROR,
            "retrying_run_id": run.rerun_of,
            "href": f"{base}/deploy/{self.account_id}/projects/{self._project_id}/runs/{run.id}/",
        }
        if "trigger" in related:
            data["trigger"] = {"cause": run.cause, "job_definition_id": run.job_id}
        if "run_steps" in related:
            data["run_steps"] = [self._step_json(run, i) for i in range(len(run.steps))]
        return data

    def _step_json(self, run: _Run, index: int) -> dict[str, Any]:
        status = run.step_status[index]
        command = run.steps[index]
        logs = f"{_now()} | Running with dbt=1.9.0\n{_now()} | Invoking `{command}`\n"
        if status == ERROR:
            logs += f"{_now()} | {self.jobs[run.job_id].error_message}\n{_now()} | Done. ERROR=1\n"
        elif status == SUCCESS:
            logs += f"{_now()} | Done. PASS=1\n"
        return {
            "id": run.id * 100 + index,
            "run_id": run.id,
            "account_id": self.account_id,
            "index": index + 1,
            "status": status,
            "status_humanized": HUMANIZED[status],
            "name": f"Invoke dbt with `{command}`",
            "logs": logs if status in (SUCCESS, ERROR) else "",
        }


def _ok(data: Any, extra: Mapping[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "status": {"code": 200, "is_success": True, "user_message": "Success!", "developer_message": ""},
        "data": data,
    }
    if extra is not None:
        body["extra"] = dict(extra)
    return JSONResponse(body)


def _error(code: int, user_message: str, data: Any = None) -> JSONResponse:
    status = {"code": code, "is_success": False, "user_message": user_message, "developer_message": ""}
    return JSONResponse({"status": status, "data": data}, status_code=code)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _opt_int(value: str | None) -> int | None:
    return None if value is None or value == "" else int(value)


def _int_list(value: str | None) -> set[int] | None:
    if value is None:
        return None
    parsed = json.loads(value) if value.startswith("[") else value.split(",")
    return {int(item) for item in parsed}


def _related(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value.split(",")
    return tuple(str(item) for item in parsed) if isinstance(parsed, list) else ()
