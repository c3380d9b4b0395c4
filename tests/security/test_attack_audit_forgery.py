"""Attacks on the audit store by someone who can write it but holds no gateway key.

A real gateway writes the log (sealed batches, signed checkpoints, the mirror file); the attacker
edits copies of its stores with plain SQL, and ``mcp-gateway audit verify`` (and a gateway restarted
over the edited store) must catch every edit: forged records appended with a correct chain, records
rewritten after the newest checkpoint, the whole log deleted, and the classic modify, delete, insert,
reorder and truncate. ``TRIALS`` trials of each kind run on fresh copies.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from typer.testing import CliRunner

from conftest import GatewayFactory, RunningGateway, connect, wait_until
from mcp_gateway.app.wiring import build_runtime
from mcp_gateway.audit.record import content_hash
from mcp_gateway.audit.rows import COLUMNS, to_row
from mcp_gateway.audit.seal import ALARM_KIND
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.audit.verify import verify
from mcp_gateway.cli import app
from mcp_gateway.config import load_settings
from mcp_gateway.types import AuditRecord

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

TRIALS = 20
runner = CliRunner()
POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - id: a-echo
        tool: leaky.echo
"""
Records = list[AuditRecord]


def _verify(config: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["audit", "verify", "-c", str(config), *args])
    return result.exit_code, result.stdout + result.stderr


async def _calls(gw: RunningGateway, n: int) -> None:
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        for i in range(n):
            assert not (await client.call_tool("leaky.echo", {"text": f"call {i}"})).is_error


def _records(db: Path) -> Records:
    with SQLiteAuditSink(db, read_only=True) as sink:
        return sink.records()


def _rewrite(db: Path, records: Records, *statements: str) -> None:
    """Replace the whole audit table with ``records`` (what an attacker with SQL access can do)."""
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM audit")
    conn.executemany(
        f"INSERT INTO audit ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - test
        [to_row(r) for r in records],
    )
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def _forged_after(prev: AuditRecord, n: int = 1) -> Records:
    """Records anyone can append: the right seq, the right prev_hash, the right SHA-256; no key."""
    out: Records = []
    for i in range(n):
        forged = dataclasses.replace(
            prev,
            seq=prev.seq + 1,
            call_id=f"forged-{i}",
            agent="agent-a",
            tool="leaky.echo",
            prev_hash=prev.hash,
        )
        prev = dataclasses.replace(forged, hash=content_hash(forged))
        out.append(prev)
    return out


def _rechain(records: Records, start: int) -> Records:
    """Recompute every hash from index ``start`` on, as a careful attacker does after an edit."""
    out = list(records[:start])
    for record in records[start:]:
        fixed = dataclasses.replace(record, prev_hash=out[-1].hash if out else record.prev_hash)
        out.append(dataclasses.replace(fixed, hash=content_hash(fixed)))
    return out


async def _stopped(make_gateway: GatewayFactory, calls: int = 4, **audit: Any) -> RunningGateway:
    gw = make_gateway(POLICY, audit={"path": "audit.db", **audit})
    await _calls(gw, calls)
    gw.stop()
    return gw


async def test_a_forged_record_appended_with_a_correct_chain_fails_verification(
    make_gateway: GatewayFactory,
) -> None:
    gw = await _stopped(make_gateway)
    db = gw.settings.data_dir / "audit.db"
    records = _records(db)
    forged = _forged_after(records[-1], 2)
    _rewrite(db, [*records, *forged])
    assert verify(_records(db)).ok  # the chain alone cannot tell: this is the attack
    code, out = _verify(gw.config_path)
    assert code == 1
    first = forged[0].seq
    assert f"seq {first}: unauthenticated: records {first} to {first + 1} carry no valid seal" in out


async def test_a_gateway_restarted_over_a_forged_tail_raises_the_alarm_and_never_vouches_for_it(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await _stopped(make_gateway)
    db = gw.settings.data_dir / "audit.db"
    records = _records(db)
    (forged,) = _forged_after(records[-1])
    _rewrite(db, [*records, forged])
    with caplog.at_level(logging.ERROR, logger="mcp_gateway.audit.inherit"):
        again = make_gateway(POLICY, audit={"path": "audit.db"})
    alarms = [r for r in caplog.records if "audit alarm" in r.getMessage()]
    assert len(alarms) == 1 and f"seq {forged.seq}: unauthenticated" in alarms[0].getMessage()
    assert again.runtime.gateway.audit.alarm is not None
    assert again.readiness()["audit"].startswith("alarm:")
    (alarm,) = [r for r in again.audit() if r.kind == ALARM_KIND]
    assert alarm.seq == forged.seq + 1 and alarm.detail["unauthenticated"] == [[forged.seq, forged.seq]]
    await _calls(again, 1)
    again.stop()  # signs a checkpoint over the whole chain, the alarm inside it
    # A verifier with the public key alone (no vault) still learns the record is not authentic.
    (gw.settings.data_dir / "master.key").rename(gw.settings.data_dir.parent / "master.key.elsewhere")
    code, out = _verify(gw.config_path)
    assert code == 1 and "macs: not checked" in out
    assert f"seq {forged.seq}: unauthenticated: record {forged.seq} was found unauthenticated" in out


async def test_records_rewritten_after_the_newest_checkpoint_with_the_chain_recomputed_fail_verification(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(POLICY, audit={"path": "audit.db", "checkpoint_every": 0, "checkpoint_seconds": 0})
    await _calls(gw, 4)  # running: no checkpoint yet covers these records
    db = gw.settings.data_dir / "audit.db"
    records = _records(db)
    edited = [*records[:3], dataclasses.replace(records[3], agent="someone-else"), *records[4:]]
    _rewrite(db, _rechain(edited, 3))
    code, out = _verify(gw.config_path)
    assert code == 1 and "from what the gateway sealed" in out and "unauthenticated" in out


async def test_deleting_every_record_fails_verification_against_the_mirrored_checkpoint(
    make_gateway: GatewayFactory,
) -> None:
    gw = await _stopped(make_gateway)
    head = _records(gw.settings.data_dir / "audit.db")[-1]
    _rewrite(gw.settings.data_dir / "audit.db", [], "DELETE FROM seals", "DELETE FROM checkpoints")
    code, out = _verify(gw.config_path)
    assert code == 1 and f"the log ends at seq 0 but the expected head is seq {head.seq}" in out
    (gw.settings.data_dir / "audit.db").unlink()
    code, out = _verify(gw.config_path)
    assert code == 1 and "no audit store at" in out
    assert not (gw.settings.data_dir / "audit.db").exists()  # verify did not create an empty one


async def test_expect_head_catches_removal_of_records_no_checkpoint_covers_yet(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(POLICY, audit={"path": "audit.db", "checkpoint_every": 0, "checkpoint_seconds": 0})
    await _calls(gw, 3)
    db = gw.settings.data_dir / "audit.db"
    records = _records(db)
    head = records[-1]
    cut = records[-2].seq
    _rewrite(db, records[:-2], f"DELETE FROM seals WHERE last_seq >= {cut}")  # noqa: S608 - test
    code, _ = _verify(gw.config_path)
    assert code == 0  # a clean cut of the unsigned tail is a valid, authenticated, shorter log
    code, out = _verify(gw.config_path, "--expect-head", f"{head.seq}:{head.hash}")
    assert code == 1 and "truncated" in out


async def test_a_checkpoint_is_signed_by_time_while_the_gateway_runs(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(POLICY, audit={"path": "audit.db", "checkpoint_every": 0, "checkpoint_seconds": 0.2})
    await _calls(gw, 1)
    head = gw.runtime.sink.head()
    assert head is not None
    mirror = gw.settings.data_dir / "checkpoints.jsonl"

    def signed() -> bool:
        # The store row is written first, then the mirror line: wait for both.
        in_store = any(cp.seq >= head[0] for cp in gw.runtime.sink.checkpoints())
        lines = mirror.read_text().splitlines() if mirror.exists() else []
        return in_store and any(json.loads(line)["seq"] >= head[0] for line in lines)

    wait_until(signed, what="a checkpoint signed by time, in the store and the mirror")


# Trials on copies -------------------------------------------------------------------------------


def _modify(rng: random.Random, records: Records) -> Records:
    i = rng.randrange(len(records))
    edited = dataclasses.replace(records[i], agent="mallory")
    if rng.random() < 0.5:
        return _rechain([*records[:i], edited, *records[i + 1 :]], i)
    return [*records[:i], edited, *records[i + 1 :]]


def _delete(rng: random.Random, records: Records) -> Records:
    i = rng.randrange(len(records))
    return [*records[:i], *records[i + 1 :]]


def _insert(rng: random.Random, records: Records) -> Records:
    i = rng.randrange(1, len(records))
    (forged,) = _forged_after(records[i - 1])
    shifted = [dataclasses.replace(r, seq=r.seq + 1) for r in records[i:]]
    return [*records[:i], forged, *shifted]


def _reorder(rng: random.Random, records: Records) -> Records:
    i, j = sorted(rng.sample(range(len(records)), 2))
    out = list(records)
    out[i], out[j] = dataclasses.replace(out[j], seq=out[i].seq), dataclasses.replace(out[i], seq=out[j].seq)
    return out


def _truncate(rng: random.Random, records: Records) -> Records:
    return records[: rng.randrange(0, len(records))]


def _whole(rng: random.Random, records: Records) -> Records:
    return []


def _forge_tail(rng: random.Random, records: Records) -> Records:
    return [*records, *_forged_after(records[-1], rng.randint(1, 3))]


ATTACKS: dict[str, Callable[[random.Random, Records], Records]] = {
    "modify": _modify,
    "delete": _delete,
    "insert": _insert,
    "reorder": _reorder,
    "truncate": _truncate,
    "whole-log delete": _whole,
    "forged tail": _forge_tail,
    "forged tail + restart": _forge_tail,
}


def _copy(gw: RunningGateway, to: Path) -> Path:
    """A copy of the gateway's folder with its own config; returns the config path."""
    shutil.copytree(gw.settings.data_dir.parent, to)
    raw = yaml.safe_load(gw.config_path.read_text())
    raw.update(data_dir=str(to / "data"), policies=str(to / "policies"))
    config = to / "gateway.yaml"
    config.write_text(yaml.safe_dump(raw))
    return config


async def _restart(config: Path) -> None:
    """Start a gateway's runtime over the store and shut its audit log down (signing a checkpoint)."""
    runtime = build_runtime(load_settings(config), master_key_env=None)
    try:
        with anyio.fail_after(10):
            await runtime.gateway.audit.aclose()
    finally:
        runtime.close()


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_every_tampering_of_copies_of_a_real_log_is_detected(
    attack: str, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await _stopped(make_gateway, calls=5)
    rng = random.Random(f"store-{attack}")  # noqa: S311 - reproducible trials, not cryptography
    detected = 0
    for trial in range(TRIALS):
        config = _copy(gw, tmp_path / f"trial-{trial}")
        data = config.parent / "data"
        assert _verify(config)[0] == 0
        records = _records(data / "audit.db")
        tampered = ATTACKS[attack](rng, records)
        # The attacker also drops the seals and checkpoint rows about records that are gone.
        last = tampered[-1].seq if tampered else 0
        _rewrite(
            data / "audit.db",
            tampered,
            f"DELETE FROM seals WHERE last_seq > {last}",  # noqa: S608 - test
            f"DELETE FROM checkpoints WHERE seq > {last}",  # noqa: S608 - test
        )
        if attack.endswith("restart"):
            await _restart(config)
            (data / "master.key").unlink()  # then checked with the public key alone
        code, _ = _verify(config)
        detected += code == 1
    assert detected == TRIALS, f"{attack}: detected {detected} of {TRIALS}"
