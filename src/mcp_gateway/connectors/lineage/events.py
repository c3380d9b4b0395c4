"""OpenLineage run events for what agents did to data through the gateway, built from audit records.

The audit log is the source: a call's ``intent`` record becomes a ``START`` event and its ``outcome``
record a ``COMPLETE``, ``FAIL`` or ``ABORT`` event of the same run, so lineage tools show exactly
what the gateway recorded, nothing it did not. The run id is derived from the call id (a UUID v5),
so an event sent twice (after a restart) is the same event to the receiver.

Jobs are the gateway's tools (namespace ``settings.namespace``, name ``data.switch_in``); datasets are
``<warehouse>.<table>`` in the namespace ``mcp-gateway://<warehouse>``, a branch being the dataset
``<table>@<branch>`` (its own dataset, since it is a copy until switched in). Which tool reads and
writes what:

=====================  ===================  =====================  ==========================
tool                   inputs               outputs                output lifecycle
=====================  ===================  =====================  ==========================
``data.clone_table``   table                table\\@branch          CREATE
``data.update_rows``   table\\@branch        table\\@branch          ALTER
``data.delete_rows``   table\\@branch        table\\@branch          ALTER
``data.discard_branch``                     table\\@branch          DROP
``data.switch_in``     table\\@branch        table                  OVERWRITE (+ new version)
``data.rollback_table``                     table                  OVERWRITE (+ new version)
``ops.rerun_job``      (the job's own)
=====================  ===================  =====================  ==========================

Only calls that were allowed produce events (a denied call did nothing to any data), and a call that
ended waiting for approval ends its run with ``OTHER``: its approved retry is a run of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.generated.base import DatasetFacet, JobFacet, RunFacet
from openlineage.client.generated.dataset_version_dataset import DatasetVersionDatasetFacet
from openlineage.client.generated.error_message_run import ErrorMessageRunFacet
from openlineage.client.generated.job_type_job import JobTypeJobFacet
from openlineage.client.generated.lifecycle_state_change_dataset import (
    LifecycleStateChange,
    LifecycleStateChangeDatasetFacet,
)
from openlineage.client.generated.tags_run import TagsRunFacet, TagsRunFacetFields
from openlineage.client.serde import Serde

from mcp_gateway.types import AuditRecord

PRODUCER: Final = "https://github.com/mcp-gateway/mcp-gateway"
_RUN_IDS: Final = uuid.UUID("6f1c2a44-9d0e-4b7a-8a55-3f1f4f0a3c11")
_TAG_SOURCE: Final = "MCP_GATEWAY"

_ENDS: Final[Mapping[str, RunState]] = {
    "ok": RunState.COMPLETE,
    "cancelled": RunState.ABORT,
    "pending_approval": RunState.OTHER,
}

_CREATE, _ALTER, _DROP, _OVERWRITE = (
    LifecycleStateChange.CREATE,
    LifecycleStateChange.ALTER,
    LifecycleStateChange.DROP,
    LifecycleStateChange.OVERWRITE,
)


@dataclass(frozen=True, slots=True)
class _Moves:
    """What one tool reads and writes: ``table`` or ``branch`` (the table's branch)."""

    inputs: tuple[str, ...]
    output: str | None
    change: LifecycleStateChange | None
    versioned: bool = False


_TOOLS: Final[Mapping[str, _Moves]] = {
    "data.clone_table": _Moves(("table",), "branch", _CREATE),
    "data.update_rows": _Moves(("branch",), "branch", _ALTER),
    "data.delete_rows": _Moves(("branch",), "branch", _ALTER),
    "data.discard_branch": _Moves((), "branch", _DROP),
    "data.switch_in": _Moves(("branch",), "table", _OVERWRITE, versioned=True),
    "data.rollback_table": _Moves((), "table", _OVERWRITE, versioned=True),
    "ops.rerun_job": _Moves((), None, None),
}

LINEAGE_TOOLS: Final = frozenset(_TOOLS)
"""The tools whose calls become run events."""


def run_id(call_id: str) -> str:
    """The run's UUID: the same for every event of one call, and for a resend."""
    return str(uuid.uuid5(_RUN_IDS, call_id))


def _time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _datasets(
    intent: AuditRecord, moves: _Moves, outcome: AuditRecord | None
) -> tuple[list[InputDataset], list[OutputDataset]]:
    table = intent.args.get("table")
    if not isinstance(table, str) or "." not in table:
        return [], []
    warehouse = table.split(".", 1)[0]
    namespace = f"mcp-gateway://{warehouse}"
    branch = intent.args.get("branch")
    names = {"table": table, "branch": f"{table}@{branch}" if isinstance(branch, str) else None}
    inputs = [InputDataset(namespace, str(names[k])) for k in moves.inputs if names[k]]
    outputs: list[OutputDataset] = []
    name = names.get(moves.output) if moves.output else None
    if name:
        facets: dict[str, DatasetFacet] = {}
        if outcome is not None and outcome.status == "ok" and moves.change is not None:
            facets["lifecycleStateChange"] = LifecycleStateChangeDatasetFacet(
                lifecycleStateChange=moves.change, producer=PRODUCER
            )
            after = outcome.detail.get("after_snapshot")
            if moves.versioned and after is not None:
                facets["version"] = DatasetVersionDatasetFacet(datasetVersion=str(after), producer=PRODUCER)
        outputs.append(OutputDataset(namespace, name, facets=facets))
    return inputs, outputs


def _tags(record: AuditRecord, intent: AuditRecord) -> TagsRunFacet:
    pairs = {"agent": intent.agent, "call_id": intent.call_id, "audit_seq": str(record.seq)}
    if record.status:
        pairs["status"] = record.status
    job = intent.args.get("job")
    if isinstance(job, str):
        pairs["job"] = job
    fields = [TagsRunFacetFields(key=k, value=v, source=_TAG_SOURCE) for k, v in pairs.items()]
    return TagsRunFacet(tags=fields, producer=PRODUCER)


def run_event(record: AuditRecord, intent: AuditRecord, *, namespace: str) -> RunEvent | None:
    """The run event for ``record`` (an ``intent`` or the ``outcome`` of the call ``intent`` opened).

    Returns None for records that are no data action: other kinds, other tools, denied calls.
    """
    moves = _TOOLS.get(intent.tool)
    if moves is None or intent.kind != "intent" or intent.decision != "allow":
        return None
    if record.kind == "intent":
        state, outcome = RunState.START, None
    elif record.kind == "outcome" and record.call_id == intent.call_id:
        state, outcome = _ENDS.get(record.status, RunState.FAIL), record
    else:
        return None
    run_facets: dict[str, RunFacet] = {"tags": _tags(record, intent)}
    if state is RunState.FAIL:
        # The outcome's status and the error class only: a reason could quote upstream text.
        message = f"{intent.tool} ended with status {record.status}"
        run_facets["errorMessage"] = ErrorMessageRunFacet(
            message=message, programmingLanguage="python", producer=PRODUCER
        )
    job_facets: dict[str, JobFacet] = {
        "jobType": JobTypeJobFacet(
            processingType="BATCH", integration=_TAG_SOURCE, jobType="TOOL_CALL", producer=PRODUCER
        )
    }
    inputs, outputs = _datasets(intent, moves, outcome)
    return RunEvent(
        eventTime=_time(record.ts),
        producer=PRODUCER,
        eventType=state,
        run=Run(runId=run_id(intent.call_id), facets=run_facets),
        job=Job(namespace=namespace, name=intent.tool, facets=job_facets),
        inputs=list(inputs),
        outputs=list(outputs),
    )


def to_json(event: RunEvent) -> dict[str, Any]:
    """The event as the OpenLineage API's JSON body."""
    body: dict[str, Any] = Serde.to_dict(event)
    return body
