"""Audit hardening end to end: a real gateway signs checkpoints, withholds sensitive values, and the
admin CLI (`audit verify`, `audit hash`, `audit query --arg-hmac`) works against what it wrote."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from typer.testing import CliRunner

from conftest import GatewayFactory, RunningGateway, connect
from mcp_gateway.audit.checkpoint import sign_checkpoint
from mcp_gateway.audit.checkpointer import read_mirror
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.cli import app
from mcp_gateway.types import AuditCheckpoint, AuditRecord

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

runner = CliRunner()
EVERY = 3
SENSITIVE = "correct-horse-battery-staple-7f3a"

POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - id: a-echo
        tool: leaky.echo
        args:
          text: {sensitive: true, max_length: 40}
"""


def _cli(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def _stored(gw: RunningGateway) -> tuple[list[AuditRecord], list[AuditCheckpoint]]:
    with SQLiteAuditSink(gw.settings.data_dir / "audit.db") as sink:
        return sink.records(), sink.checkpoints()


def _tamper(gw: RunningGateway, *statements: tuple[str, tuple[Any, ...]]) -> None:
    db = sqlite3.connect(gw.settings.data_dir / "audit.db")
    for statement, params in statements:
        db.execute(statement, params)
    db.commit()
    db.close()


async def _calls(gw: RunningGateway, n: int) -> None:
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        for i in range(n):
            assert not (await client.call_tool("leaky.echo", {"text": f"call {i}"})).is_error


async def _stopped_gateway_with_checkpoints(make_gateway: GatewayFactory) -> RunningGateway:
    gw = make_gateway(POLICY, audit={"path": "audit.db", "checkpoint_every": EVERY})
    await _calls(gw, 4)
    gw.stop()
    return gw


async def test_a_checkpoint_is_signed_every_n_records_and_at_shutdown(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(POLICY, audit={"path": "audit.db", "checkpoint_every": EVERY})
    assert gw.readiness()["audit_checkpoints"] == "signed"
    start = gw.runtime.sink.head()
    start_seq = start[0] if start else 0
    await _calls(gw, 5)  # ten single-event appends: intent and outcome of each call
    records, checkpoints = _stored(gw)
    last = records[-1].seq
    assert last == start_seq + 10
    periodic = [cp.seq for cp in checkpoints if cp.seq > start_seq]
    assert periodic == [seq for seq in range(start_seq + 1, last + 1) if seq % EVERY == 0]
    by_seq = {r.seq: r.hash for r in records}
    assert all(by_seq[cp.seq] == cp.hash for cp in checkpoints)

    gw.stop()
    records, checkpoints = _stored(gw)
    assert checkpoints[-1].seq == records[-1].seq == last  # the shutdown checkpoint covers the end
    mirror = gw.settings.data_dir / "checkpoints.jsonl"
    assert read_mirror(mirror) == checkpoints
    assert (gw.settings.data_dir / "audit-signing.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY")
    code, out, err = _cli("audit", "verify", "-c", str(gw.config_path))
    assert code == 0, out + err
    assert f"{len(checkpoints)} signed checkpoint(s) checked, newest at seq {last}" in out


async def test_verify_reports_truncated_records_covered_by_a_checkpoint_even_with_its_rows_gone(
    make_gateway: GatewayFactory,
) -> None:
    gw = await _stopped_gateway_with_checkpoints(make_gateway)
    _, checkpoints = _stored(gw)
    cut = checkpoints[-2].seq - 1  # drop the records of the last two checkpoints, and those rows
    _tamper(
        gw, ("DELETE FROM audit WHERE seq > ?", (cut,)), ("DELETE FROM checkpoints WHERE seq > ?", (cut,))
    )
    code, out, err = _cli("audit", "verify", "-c", str(gw.config_path))
    assert code == 1 and "audit log fails verification" in err
    assert f"seq {cut + 1}: truncated: the log ends at seq {cut}" in out
    assert "missing_checkpoint" in out  # the mirror still had the rows the store lost


async def test_verify_reports_a_forged_checkpoint_and_one_signed_by_another_key(
    make_gateway: GatewayFactory,
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    gw = await _stopped_gateway_with_checkpoints(make_gateway)
    _, checkpoints = _stored(gw)
    genuine = checkpoints[-1]
    # One with the real key id but a signature over something else; one from an attacker's own key.
    forged = sign_checkpoint(Ed25519PrivateKey.generate(), genuine.seq + 5, "ab" * 32, genuine.ts)
    relabelled = AuditCheckpoint(genuine.seq + 5, "ab" * 32, genuine.ts, genuine.key_id, forged.signature)
    for cp in (forged, relabelled):
        _tamper(
            gw,
            (
                "INSERT INTO checkpoints (seq, hash, ts, key_id, signature) VALUES (?, ?, ?, ?, ?)",
                (cp.seq, cp.hash, cp.ts, cp.key_id, cp.signature),
            ),
        )
    code, out, err = _cli("audit", "verify", "-c", str(gw.config_path))
    assert code == 1 and "audit log fails verification" in err
    assert out.count(f"seq {genuine.seq + 5}: forged_checkpoint") == 2
    assert "unknown key" in out and "truncated" not in out


async def test_a_sensitive_argument_is_stored_only_as_an_hmac_that_audit_hash_finds(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(POLICY, agents=("agent-a", "agent-z"))
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        ok = await client.call_tool("leaky.echo", {"text": SENSITIVE})
        assert not ok.is_error and SENSITIVE in "".join(getattr(b, "text", "") for b in ok.content)
        too_long = await client.call_tool("leaky.echo", {"text": SENSITIVE * 2})
        assert too_long.is_error and SENSITIVE not in str(too_long.content)
    async with connect(gw.url, gw.tokens["agent-z"]) as client:
        with pytest.raises(MCPError):  # no grant: denied, and audited with the value withheld too
            await client.call_tool("leaky.echo", {"text": SENSITIVE})
    gw.stop()

    data_dir = gw.settings.data_dir
    stored = b"".join(p.read_bytes() for p in data_dir.iterdir() if p.name.startswith("audit.db"))
    stored += (data_dir / "checkpoints.jsonl").read_bytes()
    for form in (SENSITIVE, SENSITIVE * 2, json.dumps(SENSITIVE)):
        assert form.encode() not in stored

    code, mac, _ = _cli("audit", "hash", "-c", str(gw.config_path), stdin=SENSITIVE + "\n")
    assert code == 0 and len(mac.strip()) == 64
    code, out, _ = _cli("audit", "query", "-c", str(gw.config_path), "--arg-hmac", mac.strip(), "--json")
    found = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [(r["kind"], r["agent"]) for r in found] == [("intent", "agent-a"), ("denied", "agent-z")]
    assert found[0]["args"] == {"text": {"hmac": mac.strip()}}
    # The refused over-long value is recorded under its own hmac, with a reason that does not quote it.
    code, doubled, _ = _cli("audit", "hash", "-", "-c", str(gw.config_path), stdin=SENSITIVE * 2)
    code, out, _ = _cli("audit", "query", "-c", str(gw.config_path), "--arg-hmac", doubled.strip(), "--json")
    (denied,) = [json.loads(line) for line in out.splitlines()]
    assert denied["decision"] == "deny" and "value withheld" in denied["detail"]["reasons"][0]
    code, _, err = _cli("audit", "query", "-c", str(gw.config_path), "--arg-hmac", "not-hex")
    assert code == 1 and "64 hex digits" in err


async def test_a_sealed_gateway_signs_no_checkpoints_and_says_so(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(POLICY, sealed=True)
    assert gw.readiness()["audit_checkpoints"] == "off: no key"
    await _calls(gw, 1)
    gw.stop()
    records, checkpoints = _stored(gw)
    assert checkpoints == [] and records
    assert all(r.args.get("text") in (None, {"hmac": None}) for r in records)
    assert not (gw.settings.data_dir / "audit-signing.pub").exists()
    code, out, err = _cli("audit", "verify", "-c", str(gw.config_path))
    assert code == 3 and "0 signed checkpoint(s) checked" in out and "macs: not checked" in out
    assert f"records 1 to {records[-1].seq} are not authenticated" in err


async def test_verify_will_not_vouch_for_checkpoints_without_the_right_public_key(
    make_gateway: GatewayFactory,
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from mcp_gateway.audit.checkpoint import public_key_pem

    gw = await _stopped_gateway_with_checkpoints(make_gateway)
    exported = gw.settings.data_dir / "audit-signing.pub"
    pinned = gw.settings.data_dir.parent / "pinned.pub"
    pinned.write_bytes(exported.read_bytes())
    # An attacker who swaps the exported key: the pinned copy still says the checkpoints are genuine.
    exported.write_bytes(public_key_pem(Ed25519PrivateKey.generate().public_key()))
    code, out, _ = _cli("audit", "verify", "-c", str(gw.config_path))
    assert code == 1 and "forged_checkpoint" in out and "unknown key" in out
    code, out, err = _cli("audit", "verify", "-c", str(gw.config_path), "--public-key", str(pinned))
    assert code == 0, out + err
    exported.unlink()
    code, _, err = _cli("audit", "verify", "-c", str(gw.config_path))
    assert code == 1 and "no audit-signing public key" in err
    code, _, err = _cli("audit", "verify", "-c", str(gw.config_path), "--public-key", str(exported))
    assert code == 1 and "does not exist" in err
    (gw.settings.data_dir / "master.key").unlink()
    code, _, err = _cli("audit", "hash", "-c", str(gw.config_path), stdin="x")
    assert code == 1 and "sealed" in err
