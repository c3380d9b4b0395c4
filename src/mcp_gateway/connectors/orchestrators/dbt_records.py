"""The gateway's record of one dbt Core run (``runs/<run id>/run.json``) and how a finished
invocation becomes one: state, message, and the nodes dbt reported.

A record: ``run_id``, ``job``, ``mode``, ``select``, ``state`` / ``native_state`` (``success``;
``fail``: nodes failed; ``error``: dbt could not run, e.g. a compile error; ``timeout``; ``running``),
``message``, ``nodes`` (id → status), ``failed_nodes`` (described by ``dbt_artifacts``), ``command``
(the argv, which carries no secret), ``exit_code``, ``started_at`` / ``ended_at``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from mcp_gateway.connectors.orchestrators import dbt_artifacts as art
from mcp_gateway.connectors.orchestrators.base import OrchestratorError, RunInfo
from mcp_gateway.connectors.orchestrators.dbt_process import Invocation

_ERROR_LINES = 12


def read_json(path: Path) -> Any:
    """The parsed file, or None if it does not exist.

    Raises:
        OrchestratorError: it exists but cannot be read or is not JSON.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise OrchestratorError(
            f"dbt artifact `{path.name}` could not be read ({type(exc).__name__})"
        ) from exc


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` atomically (a reader never sees half a record)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True, default=str), encoding="utf-8")
    tmp.replace(path)


def failure_text(done: Invocation, timeout_seconds: float) -> str:
    """Why an invocation failed, on one line: the timeout, or the error dbt printed."""
    if done.timed_out:
        return f"timed out after {timeout_seconds:g}s and was stopped"
    output = done.output
    start = next((i for i, line in enumerate(output) if "Error" in line), None)
    lines = output[start : start + _ERROR_LINES] if start is not None else output[-_ERROR_LINES:]
    return " ".join(" ".join(lines).split())[:1000] or "dbt failed without output"


def records(work: Path, job: str) -> list[dict[str, Any]]:
    """The records of ``job`` under ``work/runs``, newest first."""
    runs = work / "runs"
    found = [read_json(p) for p in runs.glob("*/run.json")] if runs.is_dir() else []
    mine = [r for r in found if isinstance(r, dict) and r.get("job") == job]
    return sorted(mine, key=lambda r: (str(r.get("started_at")), str(r.get("run_id"))), reverse=True)


def run_info(record: Mapping[str, Any], live: Collection[str]) -> RunInfo:
    """The normalised state of a record; one still ``running`` that no live call runs was interrupted."""
    state, native, message = record["state"], record["native_state"], record.get("message")
    if state == "running" and record["run_id"] not in live:
        state, native, message = "unknown", "interrupted", "the gateway stopped while this run was going"
    return RunInfo(
        run_id=record["run_id"],
        state=state,
        native_state=native,
        started_at=record.get("started_at"),
        ended_at=record.get("ended_at"),
        message=message,
    )


def outcome(done: Invocation, run_dir: Path, timeout_seconds: float) -> dict[str, Any]:
    """The record fields a finished invocation sets, from its exit and ``run_dir/target``'s artifacts."""
    facts: dict[str, Any] = {"command": list(done.argv), "exit_code": done.returncode}
    results = read_json(run_dir / "target" / "run_results.json")
    nodes = art.node_results(results) if results is not None and not done.timed_out else []
    manifest = read_json(run_dir / "target" / "manifest.json")
    failed = [n for n in nodes if n.failed]
    facts["nodes"] = {n.unique_id: n.status for n in nodes}
    facts["failed_nodes"] = [art.describe_failed(n, manifest) for n in failed]
    if done.timed_out:
        return {**facts, **_state("failed", "timeout", failure_text(done, timeout_seconds))}
    if done.returncode == 0:
        return {**facts, **_state("success", "success", f"{len(nodes)} nodes ok")}
    if failed:
        named = ", ".join(
            f"{n.name} ({n.status}{f', {n.failures} failing rows' if n.failures else ''})" for n in failed
        )
        return {**facts, **_state("failed", "fail", f"{len(failed)} of {len(nodes)} nodes failed: {named}")}
    return {**facts, **_state("failed", "error", failure_text(done, timeout_seconds))}


def _state(state: str, native: str, message: str) -> dict[str, str]:
    return {"state": state, "native_state": native, "message": message}
