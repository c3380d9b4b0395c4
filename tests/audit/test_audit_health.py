"""Chain health: verify with progress, the recorded run, checkpoints, the mirror, one record's coverage."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mcp_gateway.audit.checkpoint import key_id_of, sign_checkpoint
from mcp_gateway.audit.checkpointer import Checkpointer
from mcp_gateway.audit.health import (
    VERIFY_KIND,
    VerifyProgress,
    VerifyRun,
    mirror_status,
    read_chain_health,
    record_coverage,
    verify_event,
    verify_with_progress,
)
from mcp_gateway.audit.seal import Sealer
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.types import AuditCheckpoint, AuditEvent

pytestmark = pytest.mark.anyio

KEY = Ed25519PrivateKey.generate()
PUBLIC: dict[str, Ed25519PublicKey] = {key_id_of(KEY.public_key()): KEY.public_key()}
SEALER = Sealer(b"k" * 32)


@dataclasses.dataclass
class Chain:
    sink: SQLiteAuditSink
    path: Path
    mirror: Path
    checkpointer: Checkpointer

    def add(self, n: int, checkpoint: bool = True) -> None:
        records = self.sink.append([AuditEvent(kind="intent", agent="a", tool="t") for _ in range(n)])
        if checkpoint:
            self.checkpointer.write(records[-1].seq, records[-1].hash)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    sink = SQLiteAuditSink(tmp_path / "audit.db", sealer=SEALER)
    mirror = tmp_path / "checkpoints.jsonl"
    yield Chain(sink, tmp_path / "audit.db", mirror, Checkpointer(sink, KEY, mirror=mirror))
    sink.close()


async def run(chain: Chain, batch: int = 10) -> list[VerifyProgress]:
    steps = []
    async for step in verify_with_progress(
        chain.sink, PUBLIC, mirror=chain.mirror, sealer=SEALER, batch=batch
    ):
        steps.append(step)
    return steps


async def test_verify_reports_progress_batch_by_batch_and_ends_with_the_outcome(
    chain: Chain,
) -> None:
    chain.add(25)
    chain.add(10)
    steps = await run(chain)
    # Batches are cut before a seal that runs past them: 1-25 is one sealed append, 26-35 another.
    assert [(s.phase, s.done) for s in steps] == [("checking", 25), ("checking", 35), ("done", 35)]
    assert {s.total for s in steps} == {35}
    outcome = steps[-1].outcome
    assert outcome is not None and outcome.ok and outcome.through[0] == 35
    assert outcome.assessment.checkpoints.checkpoints == 2 and outcome.unauthenticated_after is None
    assert all(s.outcome is None for s in steps[:-1])


async def test_records_appended_during_a_verify_wait_for_the_next_run(chain: Chain) -> None:
    chain.add(20)
    steps = []
    async for step in verify_with_progress(chain.sink, PUBLIC, mirror=chain.mirror, sealer=SEALER, batch=10):
        steps.append(step)
        if len(steps) == 1:
            chain.add(5)  # a busy gateway writes (and checkpoints) while the verify runs
    outcome = steps[-1].outcome
    assert outcome is not None and outcome.ok, outcome.assessment.problems if outcome else None
    assert outcome.through[0] == 20 and steps[-1].total == 20


async def test_a_tampered_record_fails_the_run_and_its_record_says_where(chain: Chain) -> None:
    chain.add(10)
    chain.add(10)
    with sqlite3.connect(chain.path) as conn:
        conn.execute("""UPDATE audit SET detail = '{"edited":true}' WHERE seq = 14""")
    conn.close()
    outcome = (await run(chain))[-1].outcome
    assert outcome is not None and not outcome.ok
    # The chain names the record; its seal names the batch it was written in (11 to 20).
    assert {(p.seq, p.kind) for p in outcome.assessment.problems} == {(11, "modified"), (14, "modified")}
    event = verify_event(outcome, by="alice")
    assert (event.kind, event.status, event.decision) == (VERIFY_KIND, "failed", "deny")
    (record,) = chain.sink.append([event])
    run_ = VerifyRun.from_record(record)
    assert run_ is not None and not run_.ok and run_.first_problem_seq == 11 and run_.by == "alice"
    assert run_.through_seq == 20 and run_.shown[0]["kind"] == "modified"
    checkpoints = chain.sink.checkpoints()
    # Up to the first checkpoint (seq 10) the chain verified; the record at 15 sits after a problem.
    early = record_coverage(3, checkpoints, run_, PUBLIC)
    assert early.checkpoint is not None and early.checkpoint.seq == 10 and early.verified is True
    late = record_coverage(15, checkpoints, run_, PUBLIC)
    assert late.checkpoint is not None and late.checkpoint.seq == 20 and late.verified is False
    assert "found a problem" in late.message


async def test_chain_health_shows_the_newest_checkpoint_the_uncovered_records_and_the_last_run(
    chain: Chain,
) -> None:
    before = read_chain_health(chain.sink, chain.mirror, PUBLIC)
    assert before.head is None and before.newest_checkpoint is None and before.last_verify is None
    chain.add(12)
    chain.add(8, checkpoint=False)
    outcome = (await run(chain))[-1].outcome
    assert outcome is not None and outcome.ok
    chain.sink.append([verify_event(outcome, by="console:alice")])
    health = read_chain_health(chain.sink, chain.mirror, PUBLIC)
    head = chain.sink.head()
    assert head is not None and health.head == head == (21, head[1])
    assert health.newest_checkpoint is not None and health.newest_checkpoint.seq == 12
    assert health.newest_checkpoint.key_id == next(iter(PUBLIC))
    assert health.uncovered == 9  # 8 records and the verify record itself
    assert health.mirror.state == "ok" and health.keep_head == f"21:{head[1]}"
    assert health.last_verify is not None and health.last_verify.ok and health.last_verify.through_seq == 20
    assert health.last_verify.by == "console:alice"
    # Not yet under a checkpoint, but the last run checked it.
    coverage = record_coverage(15, chain.sink.checkpoints(), health.last_verify, PUBLIC)
    assert coverage.checkpoint is None and coverage.verified is True
    assert coverage.message.startswith("not yet covered by a signed checkpoint")
    newest = record_coverage(21, chain.sink.checkpoints(), health.last_verify, PUBLIC)
    assert newest.verified is None


def test_a_checkpoint_signed_by_another_key_is_not_taken_as_the_newest(chain: Chain) -> None:
    chain.add(5)
    head = chain.sink.append([AuditEvent(kind="intent")])[-1]
    chain.sink.write_checkpoint(sign_checkpoint(Ed25519PrivateKey.generate(), head.seq, head.hash, 1.0))
    health = read_chain_health(chain.sink, chain.mirror, PUBLIC)
    assert health.newest_checkpoint is not None and health.newest_checkpoint.seq == 5
    assert health.forged_checkpoints == 1 and health.uncovered == 1


def _cp(seq: int) -> AuditCheckpoint:
    return sign_checkpoint(KEY, seq, "a" * 64, float(seq))


@pytest.mark.parametrize(
    ("stored", "mirrored", "error", "state"),
    [
        ([_cp(1), _cp(2)], [_cp(1), _cp(2)], None, "ok"),
        ([], [], None, "ok"),
        ([_cp(1), _cp(2)], [_cp(1)], None, "behind"),
        ([_cp(1)], [_cp(1), _cp(2)], None, "missing_in_store"),
        ([_cp(1)], None, None, "off"),
        ([_cp(1)], None, "checkpoint mirror `x` cannot be read: PermissionError", "unreadable"),
    ],
)
def test_the_mirror_file_is_compared_with_the_store(
    stored: list[AuditCheckpoint], mirrored: list[AuditCheckpoint] | None, error: str | None, state: str
) -> None:
    status = mirror_status(stored, mirrored, error)
    assert status.state == state
    if state == "missing_in_store":
        assert "not in the audit store (first at seq 2)" in status.message


def test_a_checkpoint_row_deleted_from_the_store_shows_in_the_mirror_status(chain: Chain) -> None:
    chain.add(4)
    chain.add(4)
    with sqlite3.connect(chain.path) as conn:
        conn.execute("DELETE FROM checkpoints WHERE seq = 8")
    conn.close()
    health = read_chain_health(chain.sink, chain.mirror, PUBLIC)
    assert health.mirror.state == "missing_in_store"
    assert health.newest_checkpoint is not None and health.newest_checkpoint.seq == 4


def tamper(path: Path, statement: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(statement)
    conn.close()


SCENARIOS = {
    "intact": None,
    "edited inside a batch": """UPDATE audit SET detail = '{"x":1}' WHERE seq = 14""",
    "edited at a batch boundary": """UPDATE audit SET agent = 'mallory' WHERE seq = 10""",
    "deleted across a batch boundary": "DELETE FROM audit WHERE seq BETWEEN 9 AND 12",
    "tail cut below a checkpoint": "DELETE FROM audit WHERE seq > 17",
    "forged seal": "UPDATE seals SET mac = replace(mac, substr(mac, 1, 1), 'f') WHERE first_seq = 6",
    "checkpoint row deleted": "DELETE FROM checkpoints WHERE seq = 10",
    "record renumbered": "UPDATE audit SET seq = 100 WHERE seq = 7",
}


@pytest.mark.parametrize("statement", SCENARIOS.values(), ids=SCENARIOS.keys())
async def test_the_batched_verify_finds_a_problem_exactly_when_audit_verify_does(
    chain: Chain, statement: str | None
) -> None:
    from mcp_gateway.audit.assess import assess
    from mcp_gateway.audit.checkpointer import read_mirror

    for _ in range(4):
        chain.add(5)  # seals of 5 records, checkpoints at 5, 10, 15, 20
    chain.sink.append([AuditEvent(kind="intent")] * 3)  # 21-23: sealed, after the newest checkpoint
    if statement is not None:
        tamper(chain.path, statement)
    whole = assess(
        chain.sink.records(),
        chain.sink.checkpoints(),
        PUBLIC,
        mirrored=read_mirror(chain.mirror),
        seals=chain.sink.seals(),
        sealer=SEALER,
    )
    outcome = (await run(chain, batch=4))[-1].outcome
    assert outcome is not None
    assert outcome.ok == whole.ok == (statement is None)
    # Both point at the first place the log went wrong.
    assert min((p.seq for p in outcome.assessment.problems), default=None) == min(
        (p.seq for p in whole.problems), default=None
    )


async def test_records_without_a_seal_are_named_unauthenticated_as_audit_verify_names_them(
    chain: Chain, tmp_path: Path
) -> None:
    from mcp_gateway.audit.assess import assess

    chain.add(6)
    with SQLiteAuditSink(chain.path) as unsealed:  # a writer without the vault's key
        unsealed.append([AuditEvent(kind="admin")] * 4)
    chain.sink.append([AuditEvent(kind="intent")] * 2)
    whole = assess(
        chain.sink.records(), chain.sink.checkpoints(), PUBLIC, seals=chain.sink.seals(), sealer=SEALER
    )
    outcome = (await run(chain, batch=3))[-1].outcome
    assert outcome is not None and not outcome.ok
    assert outcome.assessment.seals is not None and whole.seals is not None
    assert outcome.assessment.seals.unauthenticated == whole.seals.unauthenticated == [(7, 10)]
    assert outcome.assessment.seals.authenticated == whole.seals.authenticated
