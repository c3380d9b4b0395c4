"""A running gateway streams its audit log to rsyslog and an HTTP collector, across a restart."""

from __future__ import annotations

from typing import Any

import pytest
import siem_receivers
from siem_receivers import Collector, Rsyslog

from conftest import CONSTRAINED_ECHO, GatewayFactory, RunningGateway, connect, grants_policy, wait_until

collector = siem_receivers.collector  # the fixture, by its name here
rsyslog = siem_receivers.rsyslog  # the fixture, by its name here

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

POLICY = grants_policy({"agent-a": [CONSTRAINED_ECHO]})


def _siem(rsyslog: Rsyslog, collector: Collector) -> dict[str, Any]:
    return {
        "siem": {
            "sinks": {
                "soc": {"type": "syslog", "host": "127.0.0.1", "port": rsyslog.port},
                "splunk": {
                    "type": "http",
                    "url": collector.url,
                    "token": "secret://hec_token",
                    "allow_private_network": True,
                },
            },
            "batch_size": 3,
            "poll_seconds": 0.05,
            "retry_initial_seconds": 0.05,
            "retry_max_seconds": 0.2,
        }
    }


async def _calls(gw: RunningGateway, n: int, start: int = 0) -> None:
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        for i in range(start, start + n):
            assert not (await client.call_tool("leaky.echo", {"text": f"call {i}"})).is_error
        # and one denial, so the stream holds both decisions
        denied = await client.call_tool("leaky.echo", {"text": "forbidden"})
        assert denied.is_error


async def test_a_gateway_restarted_mid_stream_loses_and_duplicates_no_record(
    make_gateway: GatewayFactory, rsyslog: Rsyslog, collector: Collector
) -> None:
    collector.accept_batches = 2  # the collector stops accepting mid-stream: the restart finds it behind
    config = _siem(rsyslog, collector)
    secrets = {"hec_token": collector.token}
    gw = make_gateway(POLICY, config=config, secrets=secrets)
    await _calls(gw, 8)
    wait_until(lambda: collector.down and len(rsyslog.seqs()) >= 6, what="export under way")
    gw.stop()
    sent_before = collector.seqs()
    assert sent_before == list(range(1, 7))  # two batches of three, then nothing accepted

    collector.accept_batches, collector.down = None, False
    gw = make_gateway(POLICY, config=config, secrets=secrets)
    await _calls(gw, 4, start=8)
    every = [record.seq for record in gw.audit()]
    wait_until(lambda: collector.seqs()[-1:] == every[-1:], what="collector caught up")
    wait_until(lambda: rsyslog.seqs()[-1:] == every[-1:], what="rsyslog caught up")
    # Exactly the audit log, in order: nothing lost, nothing sent twice, on either sink.
    assert collector.seqs() == every
    assert rsyslog.seqs() == every
    kinds = {body["unmapped"]["mcp_gateway"]["kind"] for _, _, body in rsyslog.messages()}
    assert {"intent", "outcome", "denied"} <= kinds
    assert all(collector.token not in repr(event) for event in collector.events)
