"""Logging in to the console with the OAuth identity provider's token: the subject is the person, its role
from ``console.roles``, the audience ``console.oauth_audience`` (apart from the agents' ``/mcp`` one), no
agent claim needed; a forged, unmapped or wrong-audience token is refused and audited. The IdP's keys are
served over real HTTP on 127.0.0.1 (a JWKS endpoint started by the test)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from console_support import (
    PEOPLE,
    ConsoleGateway,
    client_for,
    close_clients,
    start_console_gateway,
    stop_console_gateway,
)
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

from mcp_gateway.app.console import console_verifier
from mcp_gateway.config import Settings

pytestmark = pytest.mark.e2e
ISSUER = "https://idp.test/realms/security"
CONSOLE_AUDIENCE = "https://gateway.example.test/console"
KEY = ed25519.Ed25519PrivateKey.generate()


class _JWKS(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        jwk = {
            **OKPAlgorithm.to_jwk(KEY.public_key(), as_dict=True),
            "kid": "k1",
            "use": "sig",
            "alg": "EdDSA",
        }
        body = json.dumps({"keys": [jwk]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def oauth_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleGateway]:
    idp = ThreadingHTTPServer(("127.0.0.1", 0), _JWKS)
    thread = threading.Thread(target=idp.serve_forever, daemon=True)
    thread.start()
    oauth = {
        "issuer": ISSUER,
        "jwks_url": f"http://127.0.0.1:{idp.server_address[1]}/jwks",
        "algorithms": ["EdDSA"],
        # Agents must be mapped: a person's token (no such client) still logs in to the console.
        "agents": {"agent-client": "agent-a"},
    }
    roles = {**PEOPLE, "sec-analyst-7": "viewer"}
    console = {"enabled": True, "roles": roles, "oauth_audience": CONSOLE_AUDIENCE}
    gw = start_console_gateway(tmp_path_factory.mktemp("console-oauth"), console, {"oauth": oauth})
    try:
        yield gw
    finally:
        stop_console_gateway(gw)
        idp.shutdown()
        thread.join(timeout=10)
        idp.server_close()


@pytest.fixture(autouse=True)
def _closed_clients() -> Iterator[None]:
    yield from close_clients()


def _token(
    subject: str,
    key: ed25519.Ed25519PrivateKey = KEY,
    audience: str = CONSOLE_AUDIENCE,
    **more: str,
) -> str:
    """An IdP token for a person (no ``client_id``/``azp``: not an agent), or with ``more`` claims."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": audience,
        "sub": subject,
        "exp": now + 300,
        "iat": now,
        "jti": uuid.uuid4().hex,
        **more,
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "k1"})


def _login(gw: ConsoleGateway, token: str) -> Any:
    client = client_for(gw)
    nonce = client.get("/login").text.split('name="nonce" value="', 1)[1].split('"', 1)[0]
    return client, client.post("/login", data={"nonce": nonce, "token": token})


def test_an_idp_token_logs_in_its_subject_with_the_configured_role(oauth_gateway: ConsoleGateway) -> None:
    client, answer = _login(oauth_gateway, _token("sec-analyst-7"))
    assert answer.status_code == 303
    assert "sec-analyst-7 · viewer" in client.get("/audit").text
    login = [r for r in oauth_gateway.audit() if r.kind == "console_login"][-1]
    assert (login.detail["person"], login.detail["via"], login.detail["role"]) == (
        "sec-analyst-7",
        "oauth",
        "viewer",
    )


def test_a_forged_or_unmapped_idp_token_is_refused_and_audited(oauth_gateway: ConsoleGateway) -> None:
    forged = _token("sec-analyst-7", ed25519.Ed25519PrivateKey.generate())
    agents_door = _token("sec-analyst-7", audience=f"{oauth_gateway.base}/mcp", client_id="agent-client")
    for token, reason in (
        (forged, "invalid token signature"),
        (_token("stranger"), "`stranger` has no console role"),
        (agents_door, "token audience is not this gateway"),
    ):
        _client, answer = _login(oauth_gateway, token)
        assert answer.status_code == 401
        failure = [r for r in oauth_gateway.audit() if r.kind == "admin_auth_failure"][-1]
        assert failure.detail["reason"] == reason and failure.detail["token_kind"] == "oauth"
        assert token not in json.dumps(dict(failure.detail))


def _initialize(gw: ConsoleGateway, token: str) -> httpx.Response:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    return httpx.post(f"{gw.base}/mcp", json=body, headers=headers, timeout=10)


def test_a_console_token_opens_no_agent_door_and_an_agent_token_no_console(
    oauth_gateway: ConsoleGateway,
) -> None:
    agent = _token("agent-sub", audience=f"{oauth_gateway.base}/mcp", client_id="agent-client")
    assert _initialize(oauth_gateway, agent).status_code == 200
    person = _token("sec-analyst-7", client_id="agent-client")
    assert _initialize(oauth_gateway, person).status_code == 401
    _client, answer = _login(oauth_gateway, agent)
    assert answer.status_code == 401


def test_the_console_audience_defaults_to_the_mcp_resource_and_needs_no_agent_claim(tmp_path: Path) -> None:
    oauth = {"issuer": ISSUER, "jwks_url": "http://127.0.0.1:9/jwks"}
    base = {"data_dir": str(tmp_path), "oauth": oauth}
    default = console_verifier(Settings.model_validate(base))
    assert default is not None and default.audience == f"{Settings.model_validate(base).resource_url}/mcp"
    assert default.agent_claims == ("sub",) and default.agents == {}
    named = Settings.model_validate({**base, "oauth": {**oauth, "audience": "https://gw.example/mcp"}})
    assert console_verifier(named).audience == "https://gw.example/mcp"  # type: ignore[union-attr]
    own = Settings.model_validate({**base, "console": {"oauth_audience": CONSOLE_AUDIENCE}})
    assert console_verifier(own).audience == CONSOLE_AUDIENCE  # type: ignore[union-attr]
    assert console_verifier(Settings.model_validate({"data_dir": str(tmp_path)})) is None
