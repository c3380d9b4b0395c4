"""Attack: a stdio upstream writes its secrets to stderr split across lines, to get them into the log.

Line-by-line scrubbing sees a PEM key, a multi-line JSON key file, MIME-wrapped base64 and a value
broken over two lines only in pieces, none of which is a whole secret (issue 13, item 8). The
upstream (fixtures/split_stderr_upstream.py) is a real process the gateway starts; the gateway's log
must hold no piece of any of them: no 6-character chunk of a value, no 8-character chunk (6 bytes'
worth) of the base64 that only the value determines.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import string
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import FIXTURES, GatewayFactory, wait_until

pytestmark = pytest.mark.e2e

POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - id: a-split
        tool: "split.*"
"""


def _secrets() -> dict[str, str]:
    rng = random.SystemRandom()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    json_key = json.dumps(
        {
            "type": "service_account",
            "project_id": "proj-" + "".join(rng.choices(string.ascii_lowercase, k=10)),
            "private_key_id": "".join(rng.choices("0123456789abcdef", k=40)),
            "private_key": pem,
            "client_email": "bot@example.iam.gserviceaccount.com",
        },
        indent=2,
    )
    return {
        "pem": pem,
        "json-key": json_key,
        "blob": "".join(rng.choices(string.ascii_letters + string.digits, k=90)),
        "token": "tok_" + "".join(rng.choices(string.ascii_letters + string.digits, k=28)),
    }


def _chunks(value: str, size: int) -> set[str]:
    return {value[i : i + size] for i in range(len(value) - size + 1)}


def test_secrets_split_across_stderr_lines_leave_no_piece_in_the_gateway_log(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = _secrets()
    caplog.set_level(logging.INFO, logger="mcp_gateway")
    env = {f"SPLIT_{name.upper().replace('-', '_')}": f"secret://{name}" for name in secrets}
    upstream = {
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(FIXTURES / "split_stderr_upstream.py")],
    }
    make_gateway(POLICY, secrets=secrets, upstreams={"split": {**upstream, "env": env}}, watch_policy=False)

    def stderr_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("upstream split stderr:")]

    wait_until(
        lambda: "upstream split stderr: split-stderr: done" in stderr_lines(), what="the upstream's stderr"
    )
    log = "\n".join(r.getMessage() for r in caplog.records)
    # The upstream really wrote each of them, and each was replaced.
    for name in secrets:
        assert f"[REDACTED:{name}]" in log, name
    assert "upstream split stderr: loading key:" in stderr_lines()
    leaks = {name: sorted(c for c in _chunks(value, 6) if c in log) for name, value in secrets.items()}
    assert leaks == {name: [] for name in secrets}
    # The blob went out base64-encoded at byte offset 1: its characters 2.. depend on the value alone.
    encoded = base64.b64encode(b"\x01" + secrets["blob"].encode()).decode()[2:-2]
    joined = "".join(line.removeprefix("upstream split stderr: ") for line in stderr_lines())
    assert sorted(c for c in _chunks(encoded, 8) if c in joined) == []
