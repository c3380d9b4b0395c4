"""Reconnaissance through ``/readyz``: before, anyone could read upstream names, secret names, internal
addresses and error texts there, and it said ready while the vault was sealed. Now the unauthenticated
answer is one bit, and the detail needs an admin token.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from conftest import GatewayFactory, free_port, leaky_stdio

pytestmark = [pytest.mark.e2e]

POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - tool: payroll-leaky.echo
"""

SECRET_NAME = "payroll-db-password"
SECRET_VALUE = "pw-7c1f0e-very-secret"


def _upstreams(tmp_path: Path, dead_port: int, *, required: bool) -> dict[str, object]:
    return {
        "payroll-leaky": leaky_stdio(tmp_path / "calls.log", env={"DB_PASSWORD": f"secret://{SECRET_NAME}"}),
        # Nothing listens there: the upstream stays unavailable, with an error text naming the address.
        "billing-internal": {
            "transport": "http",
            "url": f"http://127.0.0.1:{dead_port}/mcp",
            "allow_private_network": True,
            "required": required,
        },
    }


@pytest.mark.parametrize("required", [False, True], ids=["optional-down", "required-down"])
def test_unauthenticated_readyz_tells_nothing_but_ready_or_not(
    make_gateway: GatewayFactory, tmp_path: Path, required: bool
) -> None:
    dead_port = free_port()
    gw = make_gateway(
        POLICY,
        secrets={SECRET_NAME: SECRET_VALUE},
        upstreams=_upstreams(tmp_path, dead_port, required=required),
    )
    detail = gw.readiness()  # what an admin sees: the things an anonymous caller must not
    error_text = detail["upstreams"]["billing-internal"]
    assert error_text.startswith("unavailable: ") and len(error_text) > len("unavailable: ")
    assert detail["upstreams"]["payroll-leaky"] == "connected"
    assert detail["required_upstreams"] == (["billing-internal"] if required else [])

    forbidden = [
        "payroll-leaky",
        "billing-internal",
        SECRET_NAME,
        SECRET_VALUE,
        "127.0.0.1",
        str(dead_port),
        error_text.removeprefix("unavailable: "),
        "vault",
        "upstream",
        "policy",
    ]
    agent_token = gw.tokens["agent-a"]
    for headers in ({}, {"Authorization": f"Bearer {agent_token}"}, {"Authorization": "Basic x"}):
        response = httpx.get(f"{gw.base}/readyz", headers=headers, timeout=5)
        leaked = [word for word in forbidden if word in response.text]
        assert leaked == [], (headers, response.text)
        if not headers:
            # Required upstream down: not ready; an optional one down: still ready.
            assert response.status_code == (503 if required else 200)
            assert response.json() == {"ready": not required}
        else:
            assert response.status_code == 401 and "ready" not in response.json()
    # A non-admin token asking for the detail is an authentication failure on the record.
    failures = [r for r in gw.audit() if r.kind == "admin_auth_failure" and r.detail["path"] == "/readyz"]
    assert [r.detail.get("token_kind") for r in failures] == ["agent", None]
    assert all(agent_token not in str(r.detail) for r in failures)


def test_a_sealed_vault_is_not_ready_and_only_an_admin_learns_why(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(POLICY.replace("payroll-leaky", "leaky"), sealed=True)
    response = httpx.get(f"{gw.base}/readyz", timeout=5)
    assert (response.status_code, response.json()) == (503, {"ready": False})
    assert response.headers["cache-control"] == "no-store"
    detail = gw.readiness()
    assert detail["ready"] is False and detail["not_ready"] == ["vault sealed"]
    assert detail["vault_sealed_reason"] == "no master key is configured"
