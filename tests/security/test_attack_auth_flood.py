"""Attack: a flood of bad tokens must neither fill the audit log nor go uncounted."""

from __future__ import annotations

import httpx
import pytest

from conftest import GatewayFactory
from mcp_gateway.audit.sqlite import SQLiteAuditSink

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - id: a-echo
        tool: leaky.echo
"""
FLOOD = 300
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


async def test_a_flood_of_bad_tokens_is_audited_up_to_the_threshold_and_counted_in_full(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(POLICY)
    threshold = gw.runtime.gateway.audit.failures.threshold
    async with httpx.AsyncClient(timeout=10) as http:
        for i in range(FLOOD):
            token = "mgw_forged" if i % 3 else "not-even-a-token"
            answer = await http.post(gw.url, json=PING, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 401
    one_by_one = [r for r in gw.audit() if r.kind == "auth_failure"]
    assert len(one_by_one) == threshold  # the rest were counted, not written one by one
    assert {r.detail["client"] for r in one_by_one} == {"127.0.0.1"}
    gw.stop()  # shutdown writes the count of the window still open
    with SQLiteAuditSink(gw.settings.data_dir / "audit.db", read_only=True) as sink:
        records = sink.records()
    (summary,) = [r for r in records if r.kind == "auth_failure_summary"]
    assert summary.detail["client"] == "127.0.0.1"
    assert summary.detail["recorded"] == threshold
    assert summary.detail["aggregated"] == FLOOD - threshold
    assert sum(summary.detail["reasons"].values()) == FLOOD - threshold
