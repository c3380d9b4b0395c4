"""Real Prefect 3 and Airflow 3 servers for the orchestrator tests, each in its own cached virtualenv.

The virtualenvs live under ``~/.cache/mcp-gateway-tests/<name>-<hash of the pins>`` and are created
from PyPI on first use (never in the gateway's env). A venv counts as ready only once its marker file
exists, so an interrupted install is redone. Servers run on 127.0.0.1 with free ports, each in its own
process group (killed as a group), with state and logs in a temp dir; logs are printed when a start
fails. ``TIMINGS`` collects install and startup seconds for the report.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

CACHE = Path.home() / ".cache" / "mcp-gateway-tests"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "orchestrators"
TIMINGS: dict[str, float] = {}

PREFECT_PINS = (
    "prefect==3.9.1",
    "sqlalchemy==2.1.9",
    "fastapi==0.150.0",
    "starlette==1.10.0",
    "uvicorn==0.54.0",
    "pydantic==2.14.4",
    "alembic==1.20.1",
    "aiosqlite==0.22.1",
)
# The official constraints file is not reachable from here: pin Airflow's own packages and the few
# server-side libraries whose drift breaks it (ORM, web stack, versioned API, logging).
AIRFLOW_PINS = (
    "apache-airflow==3.3.2",
    "apache-airflow-core==3.3.2",
    "apache-airflow-task-sdk==1.3.2",
    "apache-airflow-providers-standard==1.21.0",
    "sqlalchemy==2.1.9",
    "alembic==1.20.1",
    "fastapi==0.136.3",
    "starlette==1.10.0",
    "uvicorn==0.54.0",
    "pydantic==2.14.4",
    "cadwyn==7.0.0",
    "structlog==26.1.0",
    "pendulum==3.3.0",
)
AIRFLOW_USER = "gateway"
AIRFLOW_PASSWORD = "airflow-test-password-7f3a"  # a test server's throwaway credential


def ensure_venv(name: str, pins: tuple[str, ...]) -> Path:
    """The cached venv for ``pins`` (created with pip from PyPI when absent); its root directory."""
    digest = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:10]
    root = CACHE / f"{name}-{digest}"
    marker = root / ".mcp-gateway-ready"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            TIMINGS.setdefault(f"{name}_install_s", 0.0)
            return root
        shutil.rmtree(root, ignore_errors=True)
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
        result = subprocess.run(
            [str(root / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", *pins],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"pip install of {name} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        elapsed = time.monotonic() - started
        marker.write_text(json.dumps({"pins": pins, "install_seconds": round(elapsed, 1)}), encoding="utf-8")
        TIMINGS[f"{name}_install_s"] = elapsed
        return root


def ensure_all_venvs() -> tuple[Path, Path]:
    """Both venvs (Prefect, Airflow), installed in parallel when absent: pip is mostly I/O bound."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        prefect = pool.submit(ensure_venv, "prefect", PREFECT_PINS)
        airflow = pool.submit(ensure_venv, "airflow", AIRFLOW_PINS)
        return prefect.result(), airflow.result()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class Servers:
    """Processes started for one server; ``stop`` kills each one's process group."""

    tmp: Path
    procs: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                argv, env=env, cwd=self.tmp, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"===== {p.name} (exit {p.popen.poll()}) =====\n{p.log.read_text(errors='replace')[-6000:]}"
            for p in self.procs
        )

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``predicate`` (bounded); fail with every server log if it never holds or a process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            dead = [p.name for p in self.procs if p.popen.poll() is not None]
            if dead:
                raise AssertionError(f"{dead} exited while waiting for {what}\n{self.logs()}")
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.logs()}")

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(timeout=10)


def _ok(url: str, **kwargs: object) -> bool:
    try:
        return httpx.get(url, timeout=2.0, **kwargs).status_code == 200  # type: ignore[arg-type]
    except httpx.HTTPError:
        return False


def _base_env(venv: Path) -> dict[str, str]:
    return {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(Path.home()), "LANG": "C.UTF-8"}


@dataclass
class PrefectServer:
    api_url: str
    marker: Path
    servers: Servers


@contextlib.contextmanager
def prefect_server(tmp: Path, port: int) -> Iterator[PrefectServer]:
    """A Prefect 3 server (SQLite) plus a ``serve`` process for deployment ``flaky-orders/nightly``."""
    venv = ensure_all_venvs()[0]
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **_base_env(venv),
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "FLAKY_MARKER": str(tmp / "prefect-flaky.marker"),
    }
    servers = Servers(tmp)
    try:
        started = time.monotonic()
        servers.spawn(
            "prefect-server",
            [str(venv / "bin" / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env,
        )
        servers.wait(lambda: _ok(f"{api}/health"), 120, "prefect server health")
        servers.spawn(
            "prefect-serve", [str(venv / "bin" / "python"), str(FIXTURES / "prefect_flaky_flow.py")], env
        )
        servers.wait(lambda: _ok(f"{api}/deployments/name/flaky-orders/nightly"), 60, "prefect deployment")
        TIMINGS["prefect_startup_s"] = time.monotonic() - started
        yield PrefectServer(api, Path(env["FLAKY_MARKER"]), servers)
    finally:
        servers.stop()


@dataclass
class AirflowServer:
    url: str
    marker: Path
    servers: Servers


def _airflow_dag_visible(url: str) -> bool:
    try:
        token = httpx.post(
            f"{url}/auth/token", json={"username": AIRFLOW_USER, "password": AIRFLOW_PASSWORD}, timeout=2.0
        ).json()["access_token"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    return _ok(f"{url}/api/v2/dags/flaky_load", headers={"Authorization": f"Bearer {token}"})


@contextlib.contextmanager
def airflow_server(tmp: Path, port: int, log_ports: tuple[int, int]) -> Iterator[AirflowServer]:
    """Airflow 3 (SQLite, LocalExecutor, simple auth manager) serving DAG ``flaky_load``.

    Runs ``db migrate`` then the api-server, scheduler and dag-processor (no triggerer: nothing defers).
    """
    venv = ensure_all_venvs()[1]
    url = f"http://127.0.0.1:{port}"
    dags = tmp / "airflow-dags"
    dags.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "airflow_flaky_dag.py", dags / "airflow_flaky_dag.py")
    passwords = tmp / "airflow-passwords.json"
    passwords.write_text(json.dumps({AIRFLOW_USER: AIRFLOW_PASSWORD}), encoding="utf-8")
    env = {
        **_base_env(venv),
        "AIRFLOW_HOME": str(tmp / "airflow-home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": "test-only-jwt-secret-0123456789abcdef",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_ports[0]),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(log_ports[1]),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "FLAKY_MARKER": str(tmp / "airflow-flaky.marker"),
    }
    airflow = str(venv / "bin" / "airflow")
    servers = Servers(tmp)
    try:
        started = time.monotonic()
        migrate = subprocess.run(
            [airflow, "db", "migrate"], env=env, cwd=tmp, capture_output=True, text=True, check=False
        )
        if migrate.returncode != 0:
            raise AssertionError(
                f"airflow db migrate failed:\n{migrate.stdout[-4000:]}\n{migrate.stderr[-4000:]}"
            )
        servers.spawn("airflow-api-server", [airflow, "api-server"], env)
        servers.spawn("airflow-scheduler", [airflow, "scheduler"], env)
        servers.spawn("airflow-dag-processor", [airflow, "dag-processor"], env)
        servers.wait(lambda: _ok(f"{url}/api/v2/monitor/health"), 180, "airflow api-server health")
        servers.wait(lambda: _airflow_dag_visible(url), 120, "airflow dag `flaky_load`")
        TIMINGS["airflow_startup_s"] = time.monotonic() - started
        yield AirflowServer(url, Path(env["FLAKY_MARKER"]), servers)
    finally:
        servers.stop()
