"""Running the ``dbt`` program: the command line, a clean environment, a timeout, scrubbed output.

dbt runs as a subprocess, as a production adapter would run dbt Core: its dependency tree stays out of
the gateway's process (and may live in its own virtualenv), and a hung run can be killed.

- **argv** carries paths, selectors and non-secret ``--vars`` only; credentials never.
- **env** is built from nothing: the gateway's own environment (its vault key, tokens) is not
  inherited. It holds a minimal ``PATH``, the settings' plain ``env``, the resolved ``secret_env``
  (``DBT_ENV_SECRET_*``, which dbt scrubs from its own logs), and switches that keep dbt off the
  network (no anonymous usage stats, no version check). ``dbt deps`` is never run.
- **output** is kept as a bounded tail, with every secret value replaced, before anyone reads it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from mcp_gateway.connectors.orchestrators.base import OrchestratorError
from mcp_gateway.connectors.orchestrators.config import DbtCoreSettings

REDACTED = "[redacted]"
TAIL_LINES = 400
_LINE_CHARS = 2000
_QUIET_ENV = {
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "DBT_VERSION_CHECK": "false",
    "DBT_USE_COLORS": "false",
    "DBT_USE_COLORS_FILE": "false",
    "DBT_PARTIAL_PARSE": "true",
    "LANG": "C.UTF-8",
}
_SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Invocation:
    """One finished (or killed) dbt invocation.

    Attributes:
        argv: the command line (no secret on it by construction).
        returncode: dbt's exit code (0 success, 1 failed nodes, 2 could not run), None if killed.
        output: the tail of stdout and stderr, secrets replaced by ``[redacted]``.
        timed_out: killed after ``timeout_seconds``.
    """

    argv: tuple[str, ...]
    returncode: int | None
    output: tuple[str, ...]
    timed_out: bool = False


def executable(settings: DbtCoreSettings) -> str:
    """The absolute path of the ``dbt`` program the settings name.

    Raises:
        OrchestratorError: it does not exist or is not executable.
    """
    name = settings.executable
    found = shutil.which(name) if os.sep not in name else name
    if found is None or not os.access(found, os.X_OK) or not Path(found).is_file():
        raise OrchestratorError(
            f"dbt executable `{name}` not found: install dbt-core and dbt-postgres (scripts/setup puts "
            "them in .venv-dbt) and set the orchestrator's `executable`"
        )
    return str(Path(found).absolute())


def environment(
    settings: DbtCoreSettings, program: str, home: Path, secrets: Mapping[str, str]
) -> dict[str, str]:
    """The whole environment of a dbt run (see the module docstring); ``secrets`` are resolved values."""
    env = {"PATH": f"{Path(program).parent}:{_SYSTEM_PATH}", "HOME": str(home)}
    env.update(settings.env)
    env.update(secrets)
    env.update(_QUIET_ENV)
    return env


def scrubber(secrets: Sequence[str]) -> Callable[[str], str]:
    """A function replacing each secret value in a text (longest first, so no part of one survives)."""
    values = sorted({s for s in secrets if s}, key=len, reverse=True)

    def scrub(text: str) -> str:
        for value in values:
            text = text.replace(value, REDACTED)
        return text

    return scrub


def command(
    settings: DbtCoreSettings,
    program: str,
    verb: Sequence[str],
    run_dir: Path,
    *,
    select: Sequence[str] = (),
    variables: Mapping[str, Any] | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv of ``dbt <verb>`` writing its artifacts to ``run_dir/target`` and logs to ``run_dir/logs``.

    Raises:
        OrchestratorError: a selector token starts with ``-`` (it would be read as an option).
    """
    project = Path(settings.project_dir).absolute()
    profiles = Path(settings.profiles_dir).absolute() if settings.profiles_dir else project
    argv = [program, *verb, "--project-dir", str(project), "--profiles-dir", str(profiles)]
    argv += ["--target-path", str(run_dir / "target"), "--log-path", str(run_dir / "logs")]
    if settings.target:
        argv += ["--target", settings.target]
    if settings.threads:
        argv += ["--threads", str(settings.threads)]
    merged = {**settings.vars, **(variables or {})}
    if merged:
        argv += ["--vars", json.dumps(merged, sort_keys=True, separators=(",", ":"))]
    for token in select:
        if not token or token.startswith("-"):
            raise OrchestratorError(f"`{token}` is not a dbt selector")
    if select:
        argv += ["--select", *select]
    return [*argv, *extra]


async def run(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    timeout_seconds: float,
    scrub: Callable[[str], str],
) -> Invocation:
    """Run ``argv`` to the end or until ``timeout_seconds``, then kill its process group.

    Raises:
        OrchestratorError: the program could not be started.
    """
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    try:
        process = await anyio.open_process(
            list(argv),
            env=dict(env),
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        raise OrchestratorError(f"dbt could not be started ({type(exc).__name__})") from exc

    async def read() -> None:
        assert process.stdout is not None  # noqa: S101 - opened with stdout=PIPE
        pending = b""
        async for chunk in process.stdout:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            tail.extend(scrub(line.decode("utf-8", "replace"))[:_LINE_CHARS] for line in lines)
        if pending:
            tail.append(scrub(pending.decode("utf-8", "replace"))[:_LINE_CHARS])

    timed_out = False
    async with process:
        with anyio.move_on_after(timeout_seconds) as scope:
            await read()
            await process.wait()
        if scope.cancelled_caught:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with anyio.CancelScope(shield=True):
                await process.wait()
    return Invocation(tuple(argv), None if timed_out else process.returncode, tuple(tail), timed_out)
