"""Attack (or slip) on the vault: a well-formed master key that is not the vault's.

Before key checks, such a key "worked": the gateway started, ``/readyz`` said ready with the vault
unsealed, every call that needed a secret failed naming an unrelated secret (``audit-hmac-key is
sealed by unknown key id ...``), and each refresh of the redactor logged a traceback (about 24 in
10 s). Now the gateway starts sealed, says why in one log line, is not ready, and stays quiet
however many calls arrive.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from conftest import ERAS, GatewayFactory, connect, leaky_stdio
from mcp_gateway.audit.keys import ensure_audit_keys
from mcp_gateway.vault.crypto import Keyring, MasterKey
from mcp_gateway.vault.keys import write_key_file
from mcp_gateway.vault.service import Vault
from mcp_gateway.vault.store import SQLiteSecretStore

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - tool: leaky.echo
      - tool: crm.echo
"""

CALLS = 30


def _text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def _vault_made_with(data: Path, key: MasterKey) -> None:
    """A vault as an earlier start left it: a key file, a secret, the audit keys (under ``key``)."""
    data.mkdir(parents=True)
    write_key_file(data / "master.key", Keyring(key))
    store = SQLiteSecretStore(data / "vault.db")
    try:
        vault = Vault(store, Keyring(key), check_keys=True)
        vault.put("crm-token", b"crm-token-value-0123456789")
        ensure_audit_keys(vault)
    finally:
        store.close()


async def test_a_wrong_master_key_starts_the_gateway_sealed_with_one_log_line_and_no_traceback_flood(
    make_gateway: GatewayFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    right, wrong = MasterKey.generate(), MasterKey.generate()
    data = tmp_path / "gw" / "data"
    _vault_made_with(data, right)
    write_key_file(data / "master.key", Keyring(wrong))  # a well-formed key, but not this vault's
    caplog.set_level(logging.INFO)
    upstreams = {
        "leaky": leaky_stdio(tmp_path / "leaky-calls.log"),
        "crm": leaky_stdio(tmp_path / "crm-calls.log", env={"CRM_TOKEN": "secret://crm-token"}),
    }
    # sealed=True: the harness leaves the key file and vault as they are.
    gw = make_gateway(POLICY, sealed=True, upstreams=upstreams)

    assert gw.runtime.gateway.secrets.vault.sealed
    ready = httpx.get(f"{gw.base}/readyz", timeout=5)
    assert (ready.status_code, ready.json()) == (503, {"ready": False})
    detail = gw.readiness()
    assert detail["vault"] == "sealed" and detail["not_ready"] == ["vault sealed"]
    assert f"`{wrong.key_id}`" in detail["vault_sealed_reason"]
    assert f"expects `{right.key_id}`" in detail["vault_sealed_reason"]

    # A bounded run of calls, both eras, some needing the secret (crm) and some not (leaky).
    answers: list[str] = []
    with anyio.fail_after(60):
        for era in ERAS:
            async with connect(gw.url, gw.tokens["agent-a"], era) as client:
                for i in range(CALLS // 2):
                    tool = "crm.echo" if i % 3 == 0 else "leaky.echo"
                    result = await client.call_tool(tool, {"text": f"call-{i}"})
                    answers.append(("ERROR: " if result.is_error else "") + _text(result))
    # Calls that need no secret are served; none fails naming an unrelated secret.
    assert sum(a.startswith("call-") for a in answers) == len([i for i in range(CALLS // 2) if i % 3]) * 2
    assert not any("audit-hmac-key" in a or "unknown key id" in a for a in answers), answers

    key_lines = [r for r in caplog.records if "is not this vault's key" in r.getMessage()]
    assert len(key_lines) == 1, [r.getMessage() for r in key_lines]
    line = key_lines[0]
    assert line.levelno == logging.ERROR
    assert wrong.key_id in line.getMessage() and right.key_id in line.getMessage()
    assert "MCP_GATEWAY_MASTER_KEY" in line.getMessage()
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert tracebacks == [], [r.getMessage() for r in tracebacks]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [line], [r.getMessage() for r in errors]
    # The sealed vault stays sealed: no key check was recorded for the wrong key.
    store = SQLiteSecretStore(data / "vault.db")
    try:
        assert set(store.key_checks()) == {right.key_id}
    finally:
        store.close()
