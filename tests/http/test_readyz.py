"""``/readyz``: ready only when the gateway can serve; the detail for admin tokens only."""

from __future__ import annotations

import httpx
import pytest

from conftest import GatewayFactory
from mcp_gateway.http.health import readiness

pytestmark = [pytest.mark.e2e]

POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - tool: leaky.echo
"""


def test_a_gateway_that_has_not_finished_starting_is_not_ready(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(POLICY)
    ready, detail = readiness(gw.runtime.gateway, started=False)
    assert not ready and detail["not_ready"] == ["starting"]
    ready, detail = readiness(gw.runtime.gateway, started=True)
    assert ready and detail["not_ready"] == []


def test_an_admin_token_gets_the_detail_and_a_revoked_one_does_not(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(POLICY)
    assert httpx.get(f"{gw.base}/readyz", timeout=5).json() == {"ready": True}
    detail = gw.readiness()
    assert detail["ready"] is True and detail["vault"] == "unsealed"
    assert detail["upstreams"] == {"leaky": "connected"} and detail["policy"] == "ok"
    admins = gw.runtime.admins
    assert admins is not None
    record, token = admins.create("ops")
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{gw.base}/readyz", headers=headers, timeout=5).json()["upstreams"] == {
        "leaky": "connected"
    }
    admins.revoke(record.token_id)
    refused = httpx.get(f"{gw.base}/readyz", headers=headers, timeout=5)
    assert refused.status_code == 401 and refused.json() == {
        "error": "unauthenticated",
        "message": "revoked token",
    }
    failure = [r for r in gw.audit() if r.kind == "admin_auth_failure"][-1]
    assert failure.detail["token_id"] == record.token_id and failure.detail["reason"] == "revoked token"
