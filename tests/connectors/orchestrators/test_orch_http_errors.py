"""Error mapping of the Prefect and Airflow adapters, against ``httpx.MockTransport`` handlers."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from mcp_gateway.connectors.orchestrators.airflow import AirflowOrchestrator, run_id_for
from mcp_gateway.connectors.orchestrators.base import (
    JobNotFound,
    OrchestratorError,
    OrchestratorUnavailable,
    RunConflict,
)
from mcp_gateway.connectors.orchestrators.config import AirflowSettings, PrefectSettings
from mcp_gateway.connectors.orchestrators.prefect import PrefectOrchestrator
from mcp_gateway.types import SecretValue

PASSWORD = "pw-that-must-never-leak-91c2"
API_KEY = "pnu_key-that-must-never-leak-77"
DEPLOYMENT = {"id": "dep-1", "name": "nightly"}
RUN = {
    "id": "run-1",
    "deployment_id": "dep-1",
    "state": {"type": "FAILED", "name": "Failed", "message": "boom"},
}


def _secrets(name: str) -> SecretValue:
    return SecretValue(name, {"af-pw": PASSWORD, "pf-key": API_KEY}[name].encode())


Handler = Callable[[httpx.Request], httpx.Response]


def _airflow(handler: Handler, retries: int = 0) -> AirflowOrchestrator:
    settings = AirflowSettings(
        kind="airflow", url="http://af.test", username="gw", password="secret://af-pw", retries=retries
    )
    return AirflowOrchestrator(settings, _secrets, transport=httpx.MockTransport(handler))


def _prefect(handler: Handler, api_key: str | None = None, retries: int = 0) -> PrefectOrchestrator:
    settings = PrefectSettings(kind="prefect", url="http://pf.test/api", api_key=api_key, retries=retries)
    return PrefectOrchestrator(settings, _secrets, transport=httpx.MockTransport(handler))


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the back-off waits instead of sleeping them."""
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr("mcp_gateway.connectors.orchestrators._rest._sleep", record)
    return waits


class AirflowFake:
    """Hands out numbered tokens and answers API calls with ``api(request)``; counts token requests."""

    def __init__(self, api: Handler) -> None:
        self.api = api
        self.tokens_issued = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            assert json.loads(request.content) == {"username": "gw", "password": PASSWORD}
            self.tokens_issued += 1
            return httpx.Response(201, json={"access_token": f"tok-{self.tokens_issued}"})
        return self.api(request)


def _dag_run(state: str, run_id: str = "r1") -> dict[str, object]:
    return {"dag_run_id": run_id, "state": state, "start_date": "2026-01-01T00:00:00Z"}


@pytest.mark.anyio
async def test_airflow_refreshes_an_expired_token_once_and_retries_the_call() -> None:
    def api(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == "Bearer tok-1":
            return httpx.Response(401, json={"detail": "token expired"})
        return httpx.Response(200, json=_dag_run("running"))

    fake = AirflowFake(api)
    orch = _airflow(fake)
    info = await orch.status("load", "r1")
    assert (info.state, fake.tokens_issued) == ("running", 2)
    await orch.aclose()


@pytest.mark.anyio
async def test_airflow_gives_up_after_one_refresh_when_the_server_keeps_answering_401() -> None:
    fake = AirflowFake(lambda request: httpx.Response(401, json={"detail": "nope"}))
    orch = _airflow(fake)
    with pytest.raises(OrchestratorError, match="refused the gateway's credentials") as caught:
        await orch.status("load", "r1")
    assert fake.tokens_issued == 2
    assert PASSWORD not in str(caught.value)
    await orch.aclose()


@pytest.mark.anyio
async def test_airflow_token_refusal_is_an_error_that_does_not_echo_the_password() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": f"bad password {PASSWORD}"})

    orch = _airflow(handler)
    with pytest.raises(OrchestratorError) as caught:
        await orch.status("load", "r1")
    assert PASSWORD not in str(caught.value)
    await orch.aclose()


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (404, {"detail": "DAG with dag_id: `load` was not found"}, JobNotFound),
        (500, {"detail": "internal"}, OrchestratorUnavailable),
        (503, None, OrchestratorUnavailable),
        (422, {"detail": [{"msg": "bad"}]}, OrchestratorError),
    ],
)
@pytest.mark.anyio
async def test_airflow_http_errors_map_to_the_orchestrator_errors(
    status: int, body: object, error: type[Exception]
) -> None:
    orch = _airflow(AirflowFake(lambda request: httpx.Response(status, json=body)))
    with pytest.raises(error):
        await orch.status("load", "r1")
    await orch.aclose()


@pytest.mark.anyio
async def test_airflow_answer_that_is_not_json_is_unavailable() -> None:
    orch = _airflow(AirflowFake(lambda request: httpx.Response(200, text="<html>proxy error</html>")))
    with pytest.raises(OrchestratorUnavailable, match="not json"):
        await orch.status("load", "r1")
    await orch.aclose()


@pytest.mark.anyio
async def test_airflow_json_of_the_wrong_shape_is_unavailable() -> None:
    orch = _airflow(AirflowFake(lambda request: httpx.Response(200, json={"dag_runs": "many"})))
    with pytest.raises(OrchestratorUnavailable, match="unexpected shape"):
        await orch.failure_context("load")
    await orch.aclose()


@pytest.mark.anyio
async def test_airflow_unreachable_server_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    orch = _airflow(handler)
    with pytest.raises(OrchestratorUnavailable, match="unreachable"):
        await orch.status("load", "r1")
    await orch.aclose()


@pytest.mark.anyio
async def test_airflow_full_rerun_whose_run_id_exists_returns_the_existing_run() -> None:
    seen: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.method == "POST":
            assert json.loads(request.content)["dag_run_id"] == run_id_for("k" * 64)
            return httpx.Response(409, json={"detail": "already exists"})
        return httpx.Response(200, json=_dag_run("running", run_id_for("k" * 64)))

    orch = _airflow(AirflowFake(api))
    info = await orch.rerun("load", "full", "k" * 64)
    assert info.run_id == run_id_for("k" * 64)
    assert seen == ["POST /api/v2/dags/load/dagRuns", f"GET /api/v2/dags/load/dagRuns/{info.run_id}"]
    await orch.aclose()


@pytest.mark.anyio
async def test_airflow_failed_only_refuses_when_the_latest_run_did_not_fail() -> None:
    orch = _airflow(
        AirflowFake(lambda request: httpx.Response(200, json={"dag_runs": [_dag_run("success")]}))
    )
    with pytest.raises(RunConflict, match="has not failed"):
        await orch.rerun("load", "failed_only", "k")
    await orch.aclose()


@pytest.mark.anyio
async def test_airflow_failed_only_clears_only_the_failed_tasks_of_the_latest_run() -> None:
    bodies: list[object] = []

    def api(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/clear"):
            bodies.append(json.loads(request.content))
            return httpx.Response(200, json=_dag_run("queued"))
        if request.url.path == "/api/v2/dags/load/dagRuns":
            assert request.url.params["order_by"] == "-run_after"
            return httpx.Response(200, json={"dag_runs": [_dag_run("failed")]})
        return httpx.Response(200, json=_dag_run("queued"))

    orch = _airflow(AirflowFake(api))
    info = await orch.rerun("load", "failed_only", "k")
    assert (info.run_id, info.state) == ("r1", "pending")
    assert bodies == [{"dry_run": False, "only_failed": True}]
    await orch.aclose()


@pytest.mark.anyio
async def test_airflow_failure_context_renders_structured_log_lines_with_the_exception() -> None:
    def api(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v2/dags/load/dagRuns":
            return httpx.Response(200, json={"dag_runs": [_dag_run("failed")]})
        if path.endswith("/taskInstances"):
            return httpx.Response(200, json={"task_instances": [{"task_id": "t", "try_number": 2}]})
        assert path.endswith("/taskInstances/t/logs/2")
        content = [
            {"event": "starting", "level": "info"},
            {
                "event": "Task failed with exception",
                "level": "error",
                "error_detail": [{"exc_type": "RuntimeError", "exc_value": "disk full"}],
            },
        ]
        return httpx.Response(200, json={"content": content})

    orch = _airflow(AirflowFake(api))
    context = await orch.failure_context("load")
    assert [run.run_id for run in context.failed_runs] == ["r1"]
    assert context.log_tail == (
        "INFO starting",
        "ERROR Task failed with exception",
        "RuntimeError: disk full",
    )
    await orch.aclose()


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, JobNotFound), (409, RunConflict), (500, OrchestratorUnavailable), (502, OrchestratorUnavailable)],
)
@pytest.mark.anyio
async def test_prefect_http_errors_map_to_the_orchestrator_errors(
    status: int, error: type[Exception]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/deployments/name/flow/dep":
            return httpx.Response(200, json=DEPLOYMENT)
        return httpx.Response(status, json={"detail": "no"})

    orch = _prefect(handler)
    with pytest.raises(error):
        await orch.rerun("flow/dep", "full", "key")
    await orch.aclose()


@pytest.mark.anyio
async def test_prefect_unknown_deployment_is_job_not_found() -> None:
    orch = _prefect(lambda request: httpx.Response(404, json={"detail": "Deployment not found"}))
    with pytest.raises(JobNotFound, match="`flow/missing`"):
        await orch.status("flow/missing", "run-1")
    await orch.aclose()


@pytest.mark.parametrize("body", ["not json at all", "[1, 2]", '{"name": "no id"}'])
@pytest.mark.anyio
async def test_prefect_garbage_answers_are_unavailable(body: str) -> None:
    orch = _prefect(lambda request: httpx.Response(200, text=body))
    with pytest.raises(OrchestratorUnavailable):
        await orch.status("flow/dep", "run-1")
    await orch.aclose()


@pytest.mark.anyio
async def test_prefect_sends_the_api_key_as_a_bearer_token_only_when_configured() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        if request.url.path.startswith("/api/deployments/name/"):
            return httpx.Response(200, json=DEPLOYMENT)
        return httpx.Response(200, json=RUN)

    with_key = _prefect(handler, api_key="secret://pf-key")
    await with_key.status("flow/dep", "run-1")
    without = _prefect(handler)
    await without.status("flow/dep", "run-1")
    assert seen == [f"Bearer {API_KEY}"] * 2 + [None] * 2
    await with_key.aclose()
    await without.aclose()


@pytest.mark.anyio
async def test_prefect_run_of_another_deployment_is_not_found() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/deployments/name/"):
            return httpx.Response(200, json=DEPLOYMENT)
        return httpx.Response(200, json={**RUN, "deployment_id": "someone-elses"})

    orch = _prefect(handler)
    with pytest.raises(JobNotFound):
        await orch.status("flow/dep", "run-1")
    await orch.aclose()


@pytest.mark.anyio
async def test_prefect_retry_that_the_server_rejects_is_a_conflict() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith("/api/deployments/name/"):
            return httpx.Response(200, json=DEPLOYMENT)
        if path == "/api/flow_runs/filter":
            return httpx.Response(200, json=[RUN])
        assert path == "/api/flow_runs/run-1/set_state"
        sent = json.loads(request.content)
        assert (sent["state"]["type"], sent["force"]) == ("SCHEDULED", True)
        return httpx.Response(200, json={"status": "REJECT", "details": {}})

    orch = _prefect(handler)
    with pytest.raises(RunConflict, match="did not accept"):
        await orch.rerun("flow/dep", "failed_only", "key")
    await orch.aclose()


@pytest.mark.anyio
async def test_prefect_job_id_without_a_deployment_name_is_refused_before_any_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    orch = _prefect(handler)
    with pytest.raises(JobNotFound, match="flow_name/deployment_name"):
        await orch.rerun("just-a-flow", "full", "key")
    await orch.aclose()


def _busy(status: int = 503, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(status, json={"detail": "Service Unavailable"}, headers=headers)


class Flaky:
    """Deployment lookups succeed; other calls get ``failures`` (responses, or exceptions to raise)
    first, then ``ok``. Records the bodies of those calls."""

    def __init__(self, failures: list[httpx.Response | Exception], ok: httpx.Response) -> None:
        self.failures = failures
        self.ok = ok
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/deployments/name/"):
            return httpx.Response(200, json=DEPLOYMENT)
        self.bodies.append(request.content)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        return self.ok


_CREATED = httpx.Response(201, json={**RUN, "state": {"type": "SCHEDULED", "name": "Scheduled"}})


@pytest.mark.anyio
async def test_prefect_busy_answers_and_a_refused_connection_are_retried_with_the_same_idempotency_key(
    no_backoff: list[float],
) -> None:
    # A Prefect server on SQLite answers 503 while its database is locked; Prefect's own client retries.
    refused = httpx.ConnectError("connection refused")
    flaky = Flaky([_busy(503, "2"), _busy(429, "1"), refused], _CREATED)
    orch = _prefect(flaky, retries=3)
    info = await orch.rerun("flow/dep", "full", "key-1")
    assert (info.run_id, info.state) == ("run-1", "pending")
    assert len(flaky.bodies) == 4
    assert {json.loads(body)["idempotency_key"] for body in flaky.bodies} == {"key-1"}
    # Retry-After is honoured; without one the back-off is exponential (third attempt: 1 s + jitter).
    assert no_backoff[:2] == [2.0, 1.0]
    assert 1.0 <= no_backoff[2] <= 1.25
    await orch.aclose()


@pytest.mark.anyio
async def test_prefect_busy_answers_that_outlive_the_retries_are_unavailable(no_backoff: list[float]) -> None:
    flaky = Flaky([_busy() for _ in range(10)], _CREATED)
    orch = _prefect(flaky, retries=2)
    with pytest.raises(OrchestratorUnavailable, match="http 503"):
        await orch.rerun("flow/dep", "full", "key-1")
    assert (len(flaky.bodies), len(no_backoff)) == (3, 2)
    await orch.aclose()


@pytest.mark.anyio
async def test_a_retry_after_beyond_the_cap_is_not_waited_for(no_backoff: list[float]) -> None:
    from mcp_gateway.connectors.orchestrators._rest import WAIT_MAX_SECONDS

    flaky = Flaky([_busy(429, "3600"), _busy(503, "Wed, 21 Oct 2099 07:28:00 GMT")], _CREATED)
    orch = _prefect(flaky, retries=3)
    await orch.rerun("flow/dep", "full", "key-1")
    assert no_backoff == [WAIT_MAX_SECONDS, WAIT_MAX_SECONDS]
    await orch.aclose()


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (httpx.Response(500, json={"detail": "bug"}), "http 500"),
        # The request may have landed: a second send could act twice on a non-idempotent server.
        (httpx.ReadTimeout("slow"), "did not answer in time"),
    ],
)
@pytest.mark.anyio
async def test_prefect_server_errors_and_read_timeouts_are_not_retried(
    failure: httpx.Response | Exception, error: str, no_backoff: list[float]
) -> None:
    flaky = Flaky([failure], _CREATED)
    orch = _prefect(flaky, retries=3)
    with pytest.raises(OrchestratorUnavailable, match=error):
        await orch.rerun("flow/dep", "full", "key-1")
    assert (len(flaky.bodies), no_backoff) == (1, [])
    await orch.aclose()


@pytest.mark.anyio
async def test_airflow_busy_answer_is_retried_with_the_same_token(no_backoff: list[float]) -> None:
    answers = [_busy(503), httpx.Response(200, json=_dag_run("running"))]
    seen: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return answers.pop(0)

    fake = AirflowFake(api)
    orch = _airflow(fake, retries=1)
    info = await orch.status("load", "r1")
    assert (info.state, seen, fake.tokens_issued) == ("running", ["Bearer tok-1", "Bearer tok-1"], 1)
    await orch.aclose()
