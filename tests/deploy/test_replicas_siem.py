"""Two gateway processes sharing one ``store:`` export the audit log once; when the exporting one is
killed (SIGKILL), the other takes the SIEM export and the alert service over and the collector gets
every record exactly once.

The replicas are ``mcp-gateway serve`` processes (``replicas_harness``) with the lease defaults of a
real deployment (a standby tries every 2 s); the collector is a real HTTP server speaking HEC.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from replicas_harness import PG_DSN, Cluster, Replica, cluster, modern_call, wait_until

from mcp_gateway.app.wiring import open_secret_store, read_keyring
from mcp_gateway.audit.postgres import PostgresAuditSink
from mcp_gateway.config import load_settings
from mcp_gateway.connectors.siem.cursor import PostgresCursorStore
from mcp_gateway.vault.service import Vault

pytestmark = pytest.mark.e2e

POLICY = "version: 1\nagents:\n  agent-a:\n    grants: [{id: a-echo, tool: leaky.echo}]\n"
HEC_TOKEN = "hec-token-replicas-0123456789"


class Hec:
    """A HEC receiver: every event of every accepted POST, in arrival order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        events = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                if self.headers.get("Authorization") != f"Splunk {HEC_TOKEN}":
                    self.send_response(403)
                    self.end_headers()
                    return
                decoder, position = json.JSONDecoder(), 0
                while position < len(body):
                    event, position = decoder.raw_decode(body, position)
                    events.append(event)
                    while position < len(body) and body[position].isspace():
                        position += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/services/collector/event"

    def seqs(self) -> list[int]:
        return [int(event["fields"]["seq"]) for event in list(self.events)]


@pytest.fixture
def hec() -> Iterator[Hec]:
    receiver = Hec()
    thread = threading.Thread(
        target=receiver.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(timeout=5)


def _configure(c: Cluster, hec: Hec) -> None:
    """The same ``siem:`` and ``alerts:`` sections on every replica, the HEC token in the shared vault."""
    for replica in c.replicas:
        raw = yaml.safe_load(replica.config.read_text())
        raw["siem"] = {
            "sinks": {
                "splunk": {
                    "type": "http",
                    "url": hec.url,
                    "token": "secret://hec_token",
                    "allow_private_network": True,
                }
            },
            "poll_seconds": 0.05,
            "retry_initial_seconds": 0.05,
            "retry_max_seconds": 0.5,
        }
        raw["alerts"] = {"rules": {"pin_blocks": True}}
        replica.config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    settings = load_settings(c.replicas[0].config)
    store = open_secret_store(settings)
    try:
        Vault(store, read_keyring(settings, master_key_env=None)).put("hec_token", HEC_TOKEN.encode())
    finally:
        getattr(store, "close", lambda: None)()


def _echo(replica: Replica, token: str, text: str) -> None:
    body, headers = modern_call("leaky.echo", {"text": text})
    answer = httpx.post(
        replica.mcp, json=body, headers={**headers, "Authorization": f"Bearer {token}"}, timeout=10
    )
    assert answer.status_code == 200 and text in answer.text, answer.text[:300]


def _holders(sink: PostgresAuditSink) -> list[tuple[str, str, str]]:
    """(service, replica ``host:pid``, status) of every ``leader`` record, oldest first."""
    return [
        (str(r.detail["service"]), str(r.detail["replica"]), r.status)
        for r in sink.query(kind="leader", limit=100)
    ]


def _pid(holder: str) -> int:
    return int(holder.rsplit(":", 1)[1])


def test_a_killed_exporting_replica_is_replaced_by_the_standby_and_the_collector_gets_each_record_once(
    tmp_path: Path, hec: Hec
) -> None:
    with cluster(tmp_path, POLICY, ["agent-a"], count=2) as c:
        _configure(c, hec)
        c.start(None)
        token = c.tokens["agent-a"]
        sink = PostgresAuditSink(PG_DSN, schema=c.schema, create=False)
        try:
            wait_until(
                lambda: {s for s, _, _ in _holders(sink)} == {"siem", "alerts"}, 20, "the leases taken"
            )
            # each lease taken once (by either replica; the other stands by for it)
            first = _holders(sink)
            assert sorted(s for s, _, _ in first) == ["alerts", "siem"]
            holder = next(h for s, h, _ in first if s == "siem")
            leader = next(r for r in c.replicas if r.proc is not None and r.proc.pid == _pid(holder))
            standby = next(r for r in c.replicas if r is not leader)
            assert standby.proc is not None
            on_leader = {s for s, h, _ in first if h == holder}

            for i in range(4):
                _echo(leader, token, f"before-{i}")
                _echo(standby, token, f"standby-{i}")

            def caught_up() -> bool:
                head = sink.head()
                return head is not None and hec.seqs()[-1:] == [head[0]]

            wait_until(caught_up, 20, "the collector to catch up")
            # Killed once the batch is recorded too: a replica killed between "the collector has it"
            # and "the cursor says so" resends that batch (at-least-once on a crash, same event ids).
            cursors = PostgresCursorStore(PG_DSN, c.schema)
            try:
                wait_until(lambda: cursors.get("splunk") == hec.seqs()[-1], 10, "the cursor to follow")
            finally:
                cursors.close()
            killed = time.monotonic()
            leader.kill()
            wait_until(lambda: len(_holders(sink)) == 2 + len(on_leader), 20, "the standby to take over")
            took_over = time.monotonic() - killed
            # what the killed replica held is now the standby's
            after = {(s, _pid(h), st) for s, h, st in _holders(sink)[2:]}
            assert after == {(service, standby.proc.pid, "acquired") for service in on_leader}
            for i in range(4):
                _echo(standby, token, f"after-{i}")
            wait_until(caught_up, 20, "the collector to catch up after the takeover")
            every = [record.seq for record in sink.records()]
            # Exactly the audit log, in order: nothing lost, nothing sent twice, across the kill.
            kinds = {record.seq: record.kind for record in sink.records()}
            sent = hec.seqs()
            assert sent == every, [
                (seq, kinds.get(seq)) for seq in sent if sent.count(seq) > 1 or seq not in kinds
            ]
            # default lease timing: a standby tries every 2 s
            assert took_over < 6.0, took_over
            print(f"\ntakeover after SIGKILL (default lease timing): {took_over:.2f}s")
        finally:
            sink.close()
