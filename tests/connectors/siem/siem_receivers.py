"""A real rsyslog (Debian ``rsyslog``, ``rsyslog-gnutls`` for TLS) and a HEC-style HTTP receiver,
each started by the test as its own process / server on a free port."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from siem_certs import Pki, make_pki

from conftest import wait_until

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
SD = re.compile(r'\[mcpgw@32473 seq="(\d+)" eventId="([0-9a-f-]+)" kind="([^"]*)"\]')


def _conf(root: Path, port: int, pki: Pki | None) -> str:
    tls_global = (
        f' DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{pki.ca_file}"'
        f' DefaultNetstreamDriverCertFile="{pki.cert_file}" DefaultNetstreamDriverKeyFile="{pki.key_file}"'
        if pki is not None
        else ""
    )
    tls_module = ' StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon"' if pki else ""
    return f"""
global(workDirectory="{root}" maxMessageSize="256k"{tls_global})
module(load="imtcp"{tls_module})
input(type="imtcp" address="127.0.0.1" port="{port}" listenPortFileName="{root}/port" ruleset="out")
template(name="line" type="string" string="%msgid% %structured-data% %msg%\\n")
ruleset(name="out") {{ action(type="omfile" file="{root}/out.log" template="line" flushOnTXEnd="on") }}
"""


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Rsyslog:
    """One rsyslogd started by the test (``-n``: in the foreground, as the test's own child)."""

    root: Path
    pki: Pki | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def out(self) -> Path:
        return self.root / "out.log"

    def start(self) -> None:
        """Start it (on the port it had before, if it ran already), and wait until it listens."""
        port_file = self.root / "port"
        port_file.unlink(missing_ok=True)
        conf = self.root / "rsyslog.conf"
        conf.write_text(_conf(self.root, self.port, self.pki), encoding="utf-8")
        with (self.root / "rsyslogd.stderr").open("ab") as stderr:
            self.proc = subprocess.Popen(
                [RSYSLOGD, "-n", "-f", str(conf), "-i", str(self.root / "rsyslogd.pid")],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        if self.port:
            # rsyslog writes the port file only for port 0: a restart on a known port is probed.
            wait_until(lambda: _listening(self.port), what="rsyslogd")
            return
        wait_until(lambda: port_file.is_file() and port_file.read_text().strip().isdigit(), what="rsyslogd")
        self.port = int(port_file.read_text().strip())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.proc = None

    def messages(self) -> list[tuple[int, str, dict[str, Any]]]:
        """(seq, event id, JSON body) of every message received so far, in arrival order."""
        if not self.out.is_file():
            return []
        found = []
        for line in self.out.read_text(encoding="utf-8").splitlines():
            match = SD.search(line)
            assert match is not None, f"unexpected syslog line: {line[:200]}"
            found.append((int(match.group(1)), match.group(2), json.loads(line[match.end() :].strip())))
        return found

    def seqs(self) -> list[int]:
        return [seq for seq, _, _ in self.messages()]


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    """A plain-TCP rsyslog with imtcp on a free port and an omfile output in tmp."""
    daemon = Rsyslog(tmp_path / "rsyslog")
    daemon.root.mkdir()
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def rsyslog_tls(tmp_path: Path) -> Iterator[Rsyslog]:
    """The same over TLS (``gtls``), with a certificate from a test CA."""
    root = tmp_path / "rsyslog-tls"
    daemon = Rsyslog(root, pki=make_pki(tmp_path / "pki"))
    root.mkdir()
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@dataclass
class Collector:
    """A HEC-compatible receiver: answers 200 to ``Authorization: Splunk <token>``, 403 otherwise;
    ``down`` makes it answer 503 (a collector that is up but not accepting)."""

    token: str
    server: ThreadingHTTPServer | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    down: bool = False
    accept_batches: int | None = None
    """Accept this many batches, then answer as if down (a collector failing mid-stream)."""
    accepted: int = 0

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/services/collector/event"

    def seqs(self) -> list[int]:
        return [int(event["fields"]["seq"]) for event in self.events]


def _handler(collector: Collector) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode("utf-8")
            collector.headers.append(dict(self.headers))
            if collector.accept_batches is not None and collector.accepted >= collector.accept_batches:
                collector.down = True
            if collector.down:
                self._answer(503, {"text": "Server is busy", "code": 9})
                return
            if self.headers.get("Authorization") != f"Splunk {collector.token}":
                self._answer(403, {"text": "Invalid token", "code": 4})
                return
            decoder = json.JSONDecoder()
            position, text = 0, body
            while position < len(text):
                event, end = decoder.raw_decode(text, position)
                collector.events.append(event)
                position = end
                while position < len(text) and text[position] in " \n\r\t":
                    position += 1
            collector.accepted += 1
            self._answer(200, {"text": "Success", "code": 0})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def collector() -> Iterator[Collector]:
    """The HEC receiver, served from a thread on a free port."""
    found = Collector(token="hec-token-0123456789abcdef")
    found.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(found))
    thread = threading.Thread(target=found.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        found.server.shutdown()
        found.server.server_close()
        thread.join(timeout=5)
