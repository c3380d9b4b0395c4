"""dbt Core adapter: ``dbt build`` as a subprocess, results read from ``run_results.json``.

A job's id is a dbt selector. ``full`` runs ``dbt build --select <id>``; ``failed_only`` runs
``dbt retry`` on the job's latest run if it failed. A run happens inside the call (dbt Core has no
server to hand it to) under the settings' timeout, and the answer is its final state. Each run keeps
its artifacts in ``<work dir>/runs/<run id>/`` (``run.json`` is the gateway's record of it), so
``status`` and ``failure_context`` read them later. A launch key is written (exclusively) before a run
starts, so a repeat with the same key returns that run instead of running again.

Beyond the ``Orchestrator`` Protocol, for the ``data`` switch-in gate and ``ops.rerun_downstream``:

- ``manifest()``: the project parsed once (``dbt parse``) and kept until a project file changes;
- ``downstream(schema, table)``: the models downstream of the source reading that table;
- ``gate(select, schema, table, branch_relation, branch)``: the selected tests and models run with the
  source pointed at the branch (var ``gateway_branches``) and models built apart (var
  ``gateway_branch``). A ``dbt parse`` first proves the project honours both (the source reads the
  branch; no model would be built into a relation production uses); otherwise nothing runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from mcp_gateway.connectors.orchestrators import dbt_artifacts as art
from mcp_gateway.connectors.orchestrators import dbt_process as proc
from mcp_gateway.connectors.orchestrators import dbt_records as rec
from mcp_gateway.connectors.orchestrators.base import (
    FailureContext,
    JobNotFound,
    OrchestratorError,
    RerunMode,
    RunConflict,
    RunInfo,
)
from mcp_gateway.connectors.orchestrators.config import DbtCoreSettings, secret_name
from mcp_gateway.connectors.orchestrators.idempotency import iso
from mcp_gateway.types import SecretValue

_LOG_TAIL = 50
_PARTIAL_PARSE = "partial_parse.msgpack"


class DbtCoreOrchestrator:
    """One dbt Core project and profile target.

    Args:
        settings: the parsed config.
        resolve_secret: vault lookup; ``secret_env`` is resolved per invocation.
        work_dir: where run artifacts go when the settings name no ``artifacts_dir`` (the composition
            root passes ``<data_dir>/dbt/<name>``); None: a private temporary directory.
        clock: epoch seconds now.
    """

    kind = "dbt_core"

    def __init__(
        self,
        settings: DbtCoreSettings,
        resolve_secret: Callable[[str], SecretValue],
        *,
        work_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._resolve = resolve_secret
        self._clock = clock
        self._temp: Path | None = None
        if settings.artifacts_dir:
            work_dir = Path(settings.artifacts_dir)
        if work_dir is None:
            work_dir = self._temp = Path(tempfile.mkdtemp(prefix="mcp-gateway-dbt-"))
        self._work = work_dir.absolute()
        self._live: set[str] = set()
        self._parse_lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"DbtCoreOrchestrator(project_dir={self._settings.project_dir!r})"

    # -- invoking dbt --------------------------------------------------------------------------

    async def _invoke(
        self,
        verb: Sequence[str],
        run_dir: Path,
        *,
        select: Sequence[str] = (),
        variables: Mapping[str, Any] | None = None,
        extra: Sequence[str] = (),
    ) -> proc.Invocation:
        program = proc.executable(self._settings)
        secrets = {
            name: self._resolve(secret_name(ref)).reveal_text()
            for name, ref in self._settings.secret_env.items()
        }
        scrub = proc.scrubber(list(secrets.values()))
        env = proc.environment(self._settings, program, self._work, secrets)
        argv = proc.command(
            self._settings, program, verb, run_dir, select=select, variables=variables, extra=extra
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        done = await proc.run(argv, env, run_dir, self._settings.timeout_seconds, scrub)
        (run_dir / "output.log").write_text("\n".join(done.output) + "\n", encoding="utf-8")
        return done

    def _fingerprint(self) -> str:
        """Changes when the settings or any project file change (then the cached parse is stale)."""
        digest = hashlib.sha256(self._settings.model_dump_json().encode())
        root = Path(self._settings.project_dir)
        for path in sorted(root.rglob("*")):
            if path.is_file() and not {"target", "logs", "dbt_packages"} & set(path.relative_to(root).parts):
                stat = path.stat()
                digest.update(f"{path.relative_to(root)}:{stat.st_mtime_ns}:{stat.st_size}\n".encode())
        return digest.hexdigest()

    async def manifest(self) -> dict[str, Any]:
        """The project's ``manifest.json`` with production vars (parsed once, again when files change).

        Raises:
            OrchestratorError: dbt is missing or cannot parse the project (its error is named).
        """
        state = self._work / "state"
        async with self._parse_lock:
            fingerprint = await anyio.to_thread.run_sync(self._fingerprint)
            cached = state / "target" / "manifest.json"
            if (state / "fingerprint").exists() and (state / "fingerprint").read_text() == fingerprint:
                manifest = await anyio.to_thread.run_sync(rec.read_json, cached)
                if isinstance(manifest, dict):
                    return manifest
            shutil.rmtree(state, ignore_errors=True)
            done = await self._invoke(["parse"], state)
            if done.returncode != 0:
                raise OrchestratorError(f"dbt could not parse the project: {self._why(done)}")
            manifest = await anyio.to_thread.run_sync(rec.read_json, cached)
            if not isinstance(manifest, dict):
                raise OrchestratorError("dbt parse wrote no manifest.json")
            (state / "fingerprint").write_text(fingerprint)
            return manifest

    # -- run records ---------------------------------------------------------------------------

    def _why(self, done: proc.Invocation) -> str:
        return rec.failure_text(done, self._settings.timeout_seconds)

    def _job_records(self, job: str) -> list[dict[str, Any]]:
        return rec.records(self._work, job)

    def _info(self, record: Mapping[str, Any]) -> RunInfo:
        return rec.run_info(record, self._live)

    def _run_dir(self, run_id: str) -> Path:
        if not run_id or not all(c in "0123456789abcdef" for c in run_id):
            raise JobNotFound(f"dbt has no run `{run_id}`")
        return self._work / "runs" / run_id

    async def execute(
        self,
        job: str,
        mode: RerunMode,
        select: Sequence[str],
        *,
        variables: Mapping[str, Any] | None = None,
        retry_of: str | None = None,
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Run ``dbt build`` (or ``dbt retry`` of run ``retry_of``) and record it; returns the record.

        The record: ``run_id``, ``job``, ``state``, ``native_state``, ``message``, ``nodes`` (id →
        status), ``failed_nodes`` (described), ``command`` (the argv, which carries no secret).
        """
        run_id = run_id or uuid.uuid4().hex
        run_dir = self._run_dir(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {
            "run_id": run_id,
            "job": job,
            "mode": mode,
            "select": list(select),
            "state": "running",
            "native_state": "running",
            "started_at": iso(self._clock()),
        }
        rec.write_json(run_dir / "run.json", record)
        cache = self._work / "state" / "target" / _PARTIAL_PARSE
        if not variables and cache.exists() and not (run_dir / "target" / _PARTIAL_PARSE).exists():
            # Production vars: the cached parse holds, and dbt skips most of its parsing.
            (run_dir / "target").mkdir(exist_ok=True)
            shutil.copyfile(cache, run_dir / "target" / _PARTIAL_PARSE)
        self._live.add(run_id)
        try:
            if retry_of is not None:
                previous = str(self._run_dir(retry_of) / "target")
                done = await self._invoke(["retry"], run_dir, extra=["--state", previous])
            else:
                done = await self._invoke(["build"], run_dir, select=select, variables=variables)
            record.update(rec.outcome(done, run_dir, self._settings.timeout_seconds))
        except BaseException:
            record.update(state="failed", native_state="error", message="the run could not be completed")
            raise
        finally:
            self._live.discard(run_id)
            record["ended_at"] = iso(self._clock())
            rec.write_json(run_dir / "run.json", record)
        return record

    # -- the Orchestrator Protocol ---------------------------------------------------------------

    async def launch(
        self, job: str, mode: RerunMode, select: Sequence[str], idempotency_key: str
    ) -> dict[str, Any]:
        """``execute`` once per idempotency key: a repeated key returns the run it launched."""
        if not idempotency_key or not all(c in "0123456789abcdef" for c in idempotency_key):
            raise OrchestratorError("the idempotency key must be hex")
        keys = self._work / "launches"
        keys.mkdir(parents=True, exist_ok=True)
        retry_of = None
        if mode == "failed_only":
            latest = self._job_records(job)
            if not latest or self._info(latest[0]).state != "failed":
                found = f"`{latest[0]['native_state']}`" if latest else "no run"
                raise RunConflict(f"the latest run of `{job}` has not failed (found {found})")
            retry_of = str(latest[0]["run_id"])
        run_id = uuid.uuid4().hex
        try:
            fd = os.open(keys / idempotency_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            earlier = (keys / idempotency_key).read_text(encoding="utf-8").strip()
            record = rec.read_json(self._run_dir(earlier) / "run.json")
            if not isinstance(record, dict):
                raise OrchestratorError(f"the record of run `{earlier}` is missing") from None
            return record
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(run_id)
        return await self.execute(job, mode, select, retry_of=retry_of, run_id=run_id)

    async def rerun(self, job_id: str, mode: RerunMode, idempotency_key: str) -> RunInfo:
        """Build the job's selection (``full``) or retry its latest failed run (``failed_only``).

        Raises:
            RunConflict: ``failed_only`` and the latest run did not fail. OrchestratorError: dbt is
            missing, a secret is not in the vault, or the job id is not a selector.
        """
        record = await self.launch(job_id, mode, job_id.split(), idempotency_key)
        return self._info(record)

    async def status(self, job_id: str, run_id: str) -> RunInfo:
        """The recorded state of ``run_id``; a run of another job counts as not found."""
        record = rec.read_json(self._run_dir(run_id) / "run.json")
        if not isinstance(record, dict) or record.get("job") != job_id:
            raise JobNotFound(f"dbt has no run `{run_id}` of `{job_id}`")
        return self._info(record)

    async def failure_context(self, job_id: str, limit: int = 3) -> FailureContext:
        """The latest failed runs; for the latest one its failed nodes (message, failing rows,
        compiled SQL), its log tail, and the freshness of the sources upstream of those nodes."""
        records = await anyio.to_thread.run_sync(self._job_records, job_id)
        failed = [r for r in records if self._info(r).state == "failed"][:limit]
        if not failed:
            return FailureContext(job=job_id, failed_runs=())
        latest = failed[0]
        run_dir = self._run_dir(latest["run_id"])
        lines = (run_dir / "output.log").read_text(encoding="utf-8").splitlines() if run_dir.exists() else []
        nodes = tuple(latest.get("failed_nodes") or ())
        fresh: tuple[Mapping[str, Any], ...] = ()
        if self._settings.source_freshness and nodes:
            manifest = rec.read_json(run_dir / "target" / "manifest.json") or await self.manifest()
            sources = art.upstream_sources(manifest, [n["node"] for n in nodes])
            sources += [n["node"] for n in nodes if n["node"].startswith("source.")]
            fresh = tuple(await self._freshness(sorted(set(sources))))
        return FailureContext(
            job=job_id,
            failed_runs=tuple(self._info(r) for r in failed),
            log_tail=tuple(lines[-_LOG_TAIL:]),
            failed_nodes=nodes,
            source_freshness=fresh,
        )

    async def _freshness(self, sources: Sequence[str]) -> list[dict[str, Any]]:
        if not sources:
            return []
        # source.<package>.<source>.<table> → source:<source>.<table>
        select = ["source:" + ".".join(s.split(".")[2:]) for s in sources]
        run_dir = self._work / "freshness" / uuid.uuid4().hex
        try:
            done = await self._invoke(["source", "freshness"], run_dir, select=select)
            found = rec.read_json(run_dir / "target" / "sources.json")
            if found is None:
                return [{"error": f"dbt source freshness failed: {self._why(done)}"}]
            return art.freshness(found)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    # -- lineage and gates -----------------------------------------------------------------------

    async def source_of(self, schema: str, table: str) -> str:
        """The id of the dbt source reading ``schema.table``.

        Raises:
            JobNotFound: no source of the project reads it.
        """
        found = art.source_for(await self.manifest(), schema, table)
        if found is None:
            raise JobNotFound(f"no dbt source reads `{schema}.{table}`")
        return found

    async def downstream(self, schema: str, table: str) -> list[dict[str, Any]]:
        """The models downstream of the source reading ``schema.table`` (see ``dbt_artifacts``)."""
        source = await self.source_of(schema, table)
        return art.downstream_models(await self.manifest(), source)

    async def gate(
        self, select: Sequence[str], schema: str, table: str, branch_relation: str, branch: str
    ) -> dict[str, Any]:
        """Run the ``select``-ed tests and models against the branch; returns the run record.

        Raises:
            OrchestratorError: the project does not route the source to the branch, or would build a
                relation that production uses (nothing was run), or dbt could not parse it.
        """
        production = await self.manifest()
        source = await self.source_of(schema, table)
        variables = {"gateway_branch": branch, "gateway_branches": {f"{schema}.{table}": branch_relation}}
        run_id = uuid.uuid4().hex
        run_dir = self._run_dir(run_id)
        parsed = await self._invoke(["parse"], run_dir, variables=variables)
        if parsed.returncode != 0:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise OrchestratorError(f"dbt could not parse the project for the gate: {self._why(parsed)}")
        gated = rec.read_json(run_dir / "target" / "manifest.json") or {}
        if art.source_identifier(gated, source) != branch_relation:
            raise OrchestratorError(
                f"the dbt project does not point source `{source}` at branches: its identifier must follow "
                "the `gateway_branches` var"
            )
        shared = art.model_relations(gated) & (
            art.model_relations(production) | art.source_relations(production)
        )
        if shared:
            raise OrchestratorError(
                "the dbt project would build production relations during a gate "
                f"({', '.join(sorted(shared)[:3])}): models must go to their own schema when "
                "`gateway_branch` is set"
            )
        with contextlib.suppress(FileNotFoundError):
            (run_dir / "target" / "run_results.json").unlink()
        label = f"gate:{schema}.{table}@{branch}"
        return await self.execute(label, "full", select, variables=variables, run_id=run_id)

    async def aclose(self) -> None:
        """Remove the temporary work dir, if this adapter made one (nothing else is held open)."""
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None
