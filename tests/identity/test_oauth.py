"""OAuth 2.1 resource server: the JWT verifier, its JWKS cache, and a real gateway taking IdP tokens.

Keys are minted here with `cryptography` (RSA, EC P-256, Ed25519); the end-to-end tests serve them from
a JWKS endpoint over real HTTP on 127.0.0.1 and talk to the gateway with the official SDK client.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from mcp.shared.exceptions import MCPError

from conftest import ERAS, GatewayFactory, connect
from mcp_gateway.config import Settings, load_settings
from mcp_gateway.errors import AuthError, ConfigError
from mcp_gateway.identity.jwks import JWKSCache, http_jwks_fetcher, parse_jwks
from mcp_gateway.identity.oauth import OAuthVerifier, token_fingerprint

ISSUER = "https://idp.test/realms/data"
AUDIENCE = "http://127.0.0.1:8080/mcp"


# --- keys and tokens ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        algorithm: Any = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[self.alg]
        public: dict[str, Any] = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": self.alg}

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def sign(self, claims: Mapping[str, Any], *, kid: str | None = "", alg: str | None = None) -> str:
        headers = {} if kid is None else {"kid": kid or self.kid}
        return jwt.encode(dict(claims), self.private, algorithm=alg or self.alg, headers=headers)


@functools.cache
def rsa_key(kid: str = "rsa-1", bits: int = 2048) -> SigningKey:
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=bits))


def ed_key(kid: str = "ed-1") -> SigningKey:
    return SigningKey(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())


def ec_key(kid: str = "ec-1") -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def claims(audience: str = AUDIENCE, **changes: Any) -> dict[str, Any]:
    """Valid access-token claims; a change to None removes the claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": audience,
        "sub": "svc-1234",
        "client_id": "agent-a",
        "exp": now + 300,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "scope": "mcp:tools",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(payload: Mapping[str, Any]) -> str:
    """`alg: none`: a token anyone can forge."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(payload).encode())}."


def hs256_with_public_key(key: SigningKey, payload: Mapping[str, Any]) -> str:
    """The classic confusion attack: HMAC-sign with the (public) RSA key as the shared secret."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    signing_input = f"{header}.{_b64(json.dumps(payload).encode())}"
    mac = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


# --- the verifier with an in-process key source -------------------------------------------------------


@dataclass
class FakeIdP:
    """A JWKS source that counts fetches and can fail."""

    keys: list[SigningKey] = field(default_factory=list)
    fetches: int = 0
    down: bool = False

    async def fetch(self) -> Mapping[str, Any]:
        self.fetches += 1
        if self.down:
            raise httpx.ConnectError("connection refused")
        return {"keys": [k.jwk() for k in self.keys]}


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def verifier(
    idp: FakeIdP,
    clock: FakeClock | None = None,
    *,
    ttl: float = 300,
    min_interval: float = 10,
    **options: Any,
) -> OAuthVerifier:
    cache = JWKSCache(
        idp.fetch,
        algorithms=("RS256", "ES256", "EdDSA"),
        ttl=ttl,
        min_interval=min_interval,
        clock=clock or FakeClock(),
    )
    return OAuthVerifier(issuer=ISSUER, audience=AUDIENCE, jwks=cache, **options)


async def _refused(v: OAuthVerifier, token: str) -> str:
    with pytest.raises(AuthError) as info:
        await v.verify(token)
    message = str(info.value)
    assert token not in message and token[-20:] not in message
    return message


@pytest.mark.anyio
@pytest.mark.parametrize("make_key", [rsa_key, ec_key, ed_key], ids=["RS256", "ES256", "EdDSA"])
async def test_a_valid_token_becomes_an_oauth_principal_with_its_scopes(make_key: Any) -> None:
    key = make_key()
    v = verifier(FakeIdP([key]))
    token = key.sign(claims(jti="tok-1", scope="mcp:tools db:read"))
    verified = await v.verify(token)
    assert verified.principal.agent == "agent-a"
    assert verified.principal.token_id == "tok-1"
    assert verified.principal.scopes == {"mcp:tools", "db:read"}
    assert verified.principal.source == "oauth"
    assert (verified.issuer, verified.subject) == (ISSUER, "svc-1234")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("changes", "agent"),
    [
        ({}, "agent-a"),
        ({"client_id": None, "azp": "from-azp"}, "from-azp"),
        ({"client_id": None, "sub": "from-sub"}, "from-sub"),
        ({"client_id": 42, "azp": "from-azp"}, "from-azp"),
    ],
)
async def test_the_agent_comes_from_client_id_then_azp_then_sub(changes: dict[str, Any], agent: str) -> None:
    key = ed_key()
    v = verifier(FakeIdP([key]))
    assert (await v.verify(key.sign(claims(**changes)))).principal.agent == agent


@pytest.mark.anyio
async def test_a_configured_agent_claim_is_used_alone() -> None:
    key = ed_key()
    v = verifier(FakeIdP([key]), agent_claim="agent")
    assert (await v.verify(key.sign(claims(agent="etl-bot")))).principal.agent == "etl-bot"
    assert await _refused(v, key.sign(claims())) == "token names no agent"


@pytest.mark.anyio
async def test_the_agents_mapping_renames_clients_and_refuses_unlisted_ones() -> None:
    key = ed_key()
    v = verifier(FakeIdP([key]), agents={"0oa1b2c3": "pipeline-fixer"})
    assert (await v.verify(key.sign(claims(client_id="0oa1b2c3")))).principal.agent == "pipeline-fixer"
    assert await _refused(v, key.sign(claims(client_id="pipeline-fixer"))) == (
        "token client is not mapped to an agent"
    )


@pytest.mark.anyio
async def test_a_token_without_jti_is_named_by_a_fingerprint_not_by_itself() -> None:
    key = ed_key()
    token = key.sign(claims(jti=None))
    principal = (await verifier(FakeIdP([key])).verify(token)).principal
    assert principal.token_id == token_fingerprint(token)
    assert principal.token_id.startswith("sha256:") and len(principal.token_id) == 23
    assert principal.token_id[7:] not in token


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("changes", "scopes"),
    [
        ({"scope": None, "scp": ["a", "b"]}, {"a", "b"}),
        ({"scope": None, "scp": "a b"}, {"a", "b"}),
        ({"scope": None}, set()),
        ({"scope": "  a   b "}, {"a", "b"}),
    ],
)
async def test_scopes_are_read_from_scope_or_scp(changes: dict[str, Any], scopes: set[str]) -> None:
    key = ed_key()
    assert (await verifier(FakeIdP([key])).verify(key.sign(claims(**changes)))).principal.scopes == scopes


@pytest.mark.anyio
async def test_a_token_expired_within_the_leeway_is_still_accepted() -> None:
    key = ed_key()
    v = verifier(FakeIdP([key]), leeway=30)
    assert (await v.verify(key.sign(claims(exp=int(time.time()) - 5)))).principal.agent == "agent-a"
    assert await _refused(v, key.sign(claims(exp=int(time.time()) - 60))) == "token expired"


def _bad_tokens(key: SigningKey) -> list[tuple[str, str, str]]:
    now = int(time.time())
    impostor = SigningKey(key.kid, key.alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return [
        ("expired", key.sign(claims(exp=now - 3600)), "token expired"),
        ("not yet valid", key.sign(claims(nbf=now + 3600)), "token not yet valid"),
        (
            "other audience",
            key.sign(claims("https://other.example/mcp")),
            "token audience is not this gateway",
        ),
        ("wrong issuer", key.sign(claims(iss="https://evil.example")), "token issuer is not trusted"),
        ("no exp", key.sign(claims(exp=None)), "token lacks the `exp` claim"),
        ("no aud", key.sign(claims(aud=None)), "token lacks the `aud` claim"),
        ("bad signature", impostor.sign(claims()), "invalid token signature"),
        ("unknown kid", rsa_key("ghost").sign(claims()), "unknown signing key"),
        ("alg none", unsigned_token(claims()), "token algorithm not allowed"),
        ("hs256 with the public key", hs256_with_public_key(key, claims()), "token algorithm not allowed"),
        ("garbage", "not.a.jwt", "malformed token"),
        ("too large", key.sign(claims(pad="x" * 20_000)), "token too large"),
        ("bad scope claim", key.sign(claims(scope=["a"])), "invalid scope claim"),
    ]


@pytest.mark.anyio
async def test_every_kind_of_bad_token_is_refused_with_a_reason_that_never_quotes_it() -> None:
    key = rsa_key()
    v = verifier(FakeIdP([key]), min_interval=0)
    for case, token, reason in _bad_tokens(key):
        assert await _refused(v, token) == reason, case


@pytest.mark.anyio
async def test_a_token_whose_header_algorithm_differs_from_its_keys_is_refused() -> None:
    rsa_signer, ed = rsa_key(), ed_key()
    # Signed with RS256 but naming the Ed25519 key: the key, not the header, decides the algorithm.
    token = rsa_signer.sign(claims(), kid=ed.kid)
    assert (
        await _refused(verifier(FakeIdP([rsa_signer, ed])), token) == "token algorithm does not match its key"
    )


@pytest.mark.anyio
async def test_a_token_without_kid_is_accepted_only_from_a_single_key_set() -> None:
    one, two = ed_key("one"), ed_key("two")
    assert (await verifier(FakeIdP([one])).verify(one.sign(claims(), kid=None))).principal.agent == "agent-a"
    assert (
        await _refused(verifier(FakeIdP([one, two])), one.sign(claims(), kid=None)) == "unknown signing key"
    )


# --- the JWKS cache -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_keys_are_fetched_once_per_ttl() -> None:
    key, idp, clock = ed_key(), FakeIdP(), FakeClock()
    idp.keys.append(key)
    v = verifier(idp, clock, ttl=300)
    for _ in range(5):
        await v.verify(key.sign(claims()))
    assert idp.fetches == 1
    clock.now += 301
    await v.verify(key.sign(claims()))
    assert idp.fetches == 2


@pytest.mark.anyio
async def test_a_rotated_key_is_accepted_after_exactly_one_refetch() -> None:
    old, new = ed_key("old"), ed_key("new")
    idp, clock = FakeIdP([old]), FakeClock()
    v = verifier(idp, clock, min_interval=10)
    await v.verify(old.sign(claims()))
    idp.keys[:] = [new]
    clock.now += 11
    assert (await v.verify(new.sign(claims()))).principal.agent == "agent-a"
    assert idp.fetches == 2
    await v.verify(new.sign(claims()))
    assert idp.fetches == 2


@pytest.mark.anyio
async def test_unknown_key_ids_cannot_force_more_than_one_fetch_per_interval() -> None:
    key, idp, clock = ed_key(), FakeIdP(), FakeClock()
    idp.keys.append(key)
    v = verifier(idp, clock, min_interval=10)
    await v.verify(key.sign(claims()))
    for i in range(50):
        assert await _refused(v, key.sign(claims(), kid=f"made-up-{i}")) == "unknown signing key"
    assert idp.fetches == 1  # the first fetch was under a second ago
    clock.now += 10
    for i in range(50):
        await _refused(v, key.sign(claims(), kid=f"made-up-again-{i}"))
    assert idp.fetches == 2


@pytest.mark.anyio
async def test_concurrent_tokens_with_a_new_key_share_one_refetch() -> None:
    old, new = ed_key("old"), ed_key("new")
    idp, clock = FakeIdP([old]), FakeClock()
    v = verifier(idp, clock, min_interval=0)
    await v.verify(old.sign(claims()))
    idp.keys.append(new)
    agents: list[str] = []

    async def one() -> None:
        agents.append((await v.verify(new.sign(claims()))).principal.agent)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(one)
    assert agents == ["agent-a"] * 20
    assert idp.fetches == 2


@pytest.mark.anyio
async def test_a_failed_refresh_serves_the_previous_keys_for_one_more_ttl_then_refuses() -> None:
    key, idp, clock = ed_key(), FakeIdP(), FakeClock()
    idp.keys.append(key)
    v = verifier(idp, clock, ttl=100, min_interval=10)
    await v.verify(key.sign(claims()))
    idp.down = True
    clock.now += 150
    assert (await v.verify(key.sign(claims()))).principal.agent == "agent-a"
    clock.now += 51
    assert await _refused(v, key.sign(claims())) == "signing keys unavailable"
    idp.down = False
    clock.now += 10
    assert (await v.verify(key.sign(claims()))).principal.agent == "agent-a"


@pytest.mark.anyio
async def test_with_no_reachable_key_source_every_token_is_refused_without_a_fetch_storm() -> None:
    key, idp = ed_key(), FakeIdP(down=True)
    v = verifier(idp, min_interval=10)
    for _ in range(10):
        assert await _refused(v, key.sign(claims())) == "signing keys unavailable"
    assert idp.fetches == 1


@pytest.mark.anyio
async def test_a_hanging_key_source_is_cut_off_and_the_token_refused() -> None:
    async def hang() -> Mapping[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    cache = JWKSCache(hang, algorithms=("EdDSA",), fetch_timeout=0.05)
    v = OAuthVerifier(issuer=ISSUER, audience=AUDIENCE, jwks=cache)
    with anyio.fail_after(5):
        assert await _refused(v, ed_key().sign(claims())) == "signing keys unavailable"
    assert cache.fetches == 1


def test_parse_jwks_skips_symmetric_encryption_weak_and_disallowed_keys() -> None:
    good, weak = rsa_key(), rsa_key("weak", bits=1024)
    document = {
        "keys": [
            {"kty": "oct", "kid": "hmac", "k": _b64(b"0" * 32)},
            {**ed_key("enc").jwk(), "use": "enc"},
            weak.jwk(),
            ec_key("ec").jwk(),
            {"kty": "RSA", "kid": "broken"},
            "not a key",
            good.jwk(),
        ]
    }
    assert [k.key_id for k in parse_jwks(document, ["RS256", "EdDSA"])] == ["rsa-1"]
    with pytest.raises(ValueError, match="no `keys` list"):
        parse_jwks({"keys": "nope"}, ["RS256"])


@pytest.mark.anyio
async def test_the_http_fetcher_returns_the_document_and_refuses_bad_answers() -> None:
    answers = {
        "/ok": httpx.Response(200, json={"keys": []}),
        "/404": httpx.Response(404),
        "/big": httpx.Response(200, content=b" " * 1_100_000),
        "/list": httpx.Response(200, json=[1]),
        "/redirect": httpx.Response(302, headers={"Location": "https://evil.example/jwks"}),
    }
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return answers[request.url.path]

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        assert await http_jwks_fetcher("https://idp.test/ok", client=client)() == {"keys": []}
        for path, message in [
            ("/404", "answered 404"),
            ("/big", "too large"),
            ("/list", "not a JSON object"),
            ("/redirect", "answered 302"),
        ]:
            with pytest.raises(ValueError, match=message):
                await http_jwks_fetcher(f"https://idp.test{path}", client=client)()
    assert "/jwks" not in seen


# --- configuration --------------------------------------------------------------------------------


def _oauth_config(tmp_path: Path, **oauth: Any) -> Settings:
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps({"oauth": {"issuer": ISSUER, "jwks_url": "https://idp.test/jwks", **oauth}}))
    return load_settings(path)


@pytest.mark.parametrize(
    ("oauth", "expected"),
    [
        ({"algorithms": ["none"]}, "algorithm `none` is not allowed"),
        ({"algorithms": ["RS256", "HS256"]}, "algorithm `HS256` is not allowed"),
        ({"algorithms": []}, "algorithms must not be empty"),
        ({"jwks_url": "http://idp.example/jwks"}, "jwks_url must be https"),
        ({"required_scopes": ['a"b']}, "must be one scope token"),
        ({"leeway_seconds": 3600}, "leeway_seconds"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_an_unsafe_oauth_config_is_refused(tmp_path: Path, oauth: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        _oauth_config(tmp_path, **oauth)


def test_the_audience_defaults_to_the_mcp_resource_url_and_can_be_set(tmp_path: Path) -> None:
    settings = _oauth_config(tmp_path, jwks_url="http://127.0.0.1:9/jwks")
    assert (
        OAuthVerifier.from_settings(settings.oauth, settings.resource_url).audience
        == "http://127.0.0.1:8080/mcp"
    )
    custom = _oauth_config(tmp_path, audience="api://gateway")
    assert OAuthVerifier.from_settings(custom.oauth, custom.resource_url).audience == "api://gateway"
    with pytest.raises(ConfigError):
        OAuthVerifier.from_settings(None, "http://127.0.0.1:8080")


# --- a real gateway behind a real JWKS endpoint ------------------------------------------------------


class JWKSServer:
    """A JWKS endpoint over HTTP on 127.0.0.1, in a thread; ``keys`` may change while it runs."""

    def __init__(self) -> None:
        self.keys: list[SigningKey] = []
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                body = json.dumps({"keys": [k.jwk() for k in outer.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def jwks_server() -> Iterator[JWKSServer]:
    server = JWKSServer()
    server.keys.append(rsa_key())
    try:
        yield server
    finally:
        server.close()


POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - id: a-echo
        tool: leaky.echo
      - id: a-env
        tool: leaky.leak_env
        scopes: [secrets:read]
      - id: a-header
        tool: leaky.show_header
        scopes: [secrets:read, admin]
"""


def _oauth(server: JWKSServer, **extra: Any) -> dict[str, Any]:
    return {"issuer": ISSUER, "jwks_url": server.url, "jwks_min_refetch_seconds": 0, **extra}


def _post(url: str, token: str) -> httpx.Response:
    """A raw 2026-07-28 ``tools/list`` request."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "1"},
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {token}",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/list",
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}}
    return httpx.post(url, json=body, headers=headers, timeout=10)


@pytest.mark.anyio
@pytest.mark.e2e
@pytest.mark.parametrize("mode", ERAS)
async def test_a_valid_jwt_works_and_sees_only_the_grants_its_scopes_permit(
    make_gateway: GatewayFactory, jwks_server: JWKSServer, mode: str
) -> None:
    gw = make_gateway(POLICY, oauth=_oauth(jwks_server))
    key = rsa_key()
    narrow = key.sign(claims(gw.url, scope="mcp:tools", jti="jti-narrow"))
    wide = key.sign(claims(gw.url, scope="mcp:tools secrets:read", jti="jti-wide"))
    async with connect(gw.url, narrow, mode) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["leaky.echo"]
        result = await client.call_tool("leaky.echo", {"text": "via oauth"})
        assert not result.is_error
        with pytest.raises(MCPError) as info:
            await client.call_tool("leaky.leak_env", {"var": "HOME"})
        assert info.value.code == -32602
    async with connect(gw.url, wide, mode) as client:
        names = sorted(t.name for t in (await client.list_tools()).tools)
    assert names == ["leaky.echo", "leaky.leak_env"]
    # The gateway's own agent token is not filtered by grant scopes.
    async with connect(gw.url, gw.tokens["agent-a"], mode) as client:
        names = sorted(t.name for t in (await client.list_tools()).tools)
    assert names == ["leaky.echo", "leaky.leak_env", "leaky.show_header"]
    intent = next(r for r in gw.audit() if r.kind == "intent")
    assert (intent.agent, intent.tool, intent.detail["token_id"]) == ("agent-a", "leaky.echo", "jti-narrow")
    denied = next(r for r in gw.audit() if r.kind == "denied")
    assert denied.tool == "leaky.leak_env" and denied.status == "not_granted"
    assert "needs scope(s) `secrets:read`" in denied.detail["reasons"][0]
    assert jwks_server.requests == 1
    assert not any(narrow in json.dumps([r.args, r.detail]) for r in gw.audit())


@pytest.mark.e2e
def test_every_bad_token_gets_401_and_an_audit_record_without_the_token(
    make_gateway: GatewayFactory, jwks_server: JWKSServer
) -> None:
    gw = make_gateway(POLICY, oauth=_oauth(jwks_server))
    key = rsa_key()
    now = int(time.time())
    impostor = SigningKey(key.kid, key.alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    cases = [
        ("token audience is not this gateway", key.sign(claims("https://other.example/mcp"))),
        ("token expired", key.sign(claims(gw.url, exp=now - 3600))),
        ("token issuer is not trusted", key.sign(claims(gw.url, iss="https://evil.example"))),
        ("invalid token signature", impostor.sign(claims(gw.url))),
        ("unknown signing key", rsa_key("ghost").sign(claims(gw.url))),
        ("token algorithm not allowed", unsigned_token(claims(gw.url))),
        ("token algorithm not allowed", hs256_with_public_key(key, claims(gw.url))),
    ]
    for reason, token in cases:
        fetches = jwks_server.requests
        response = _post(gw.url, token)
        assert response.status_code == 401, reason
        challenge = response.headers["www-authenticate"]
        assert (
            'error="invalid_token"' in challenge and f'resource_metadata="{gw.base}/.well-known/' in challenge
        )
        assert token not in challenge and token not in response.text
        failure = gw.audit()[-1]
        assert failure.kind == "auth_failure" and failure.status == "unauthenticated"
        assert failure.detail["reason"] == reason
        assert failure.detail["source"] == "oauth"
        assert failure.detail["token_id"] == token_fingerprint(token)
        if reason == "unknown signing key":
            assert jwks_server.requests == fetches + 1  # refused only after one refetch
    records = json.dumps([[r.args, r.detail] for r in gw.audit()])
    assert not any(
        token in records or token.split(".")[-1] in records for _, token in cases if token[-1] != "."
    )
    assert _post(gw.url, key.sign(claims(gw.url))).status_code == 200


@pytest.mark.anyio
@pytest.mark.e2e
async def test_a_key_rotated_at_the_issuer_is_accepted_after_one_refetch(
    make_gateway: GatewayFactory, jwks_server: JWKSServer
) -> None:
    gw = make_gateway(POLICY, oauth=_oauth(jwks_server))
    old, new = rsa_key(), ed_key("rotated")
    async with connect(gw.url, old.sign(claims(gw.url))) as client:
        await client.list_tools()
    assert jwks_server.requests == 1
    jwks_server.keys[:] = [new]
    async with connect(gw.url, new.sign(claims(gw.url))) as client:
        result = await client.call_tool("leaky.echo", {"text": "rotated"})
    assert not result.is_error
    assert jwks_server.requests == 2
    # The retired key is gone from the set: its tokens no longer verify.
    assert _post(gw.url, old.sign(claims(gw.url))).status_code == 401
    assert gw.audit()[-1].detail["reason"] == "unknown signing key"


@pytest.mark.anyio
@pytest.mark.e2e
async def test_a_token_without_the_required_scopes_gets_403_insufficient_scope(
    make_gateway: GatewayFactory, jwks_server: JWKSServer
) -> None:
    gw = make_gateway(POLICY, oauth=_oauth(jwks_server, required_scopes=["mcp:tools", "mcp:use"]))
    key = rsa_key()
    lacking = key.sign(claims(gw.url, scope="mcp:tools secrets:read", jti="jti-lacking"))
    response = _post(gw.url, lacking)
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="insufficient_scope", scope="mcp:tools mcp:use", ')
    assert f'resource_metadata="{gw.base}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert response.json()["error"] == "insufficient_scope"
    failure = gw.audit()[-1]
    assert (failure.kind, failure.status, failure.agent) == ("auth_failure", "forbidden", "agent-a")
    assert failure.detail["reason"] == "insufficient scope" and failure.detail["token_id"] == "jti-lacking"
    # A 401 tells the client which scopes to ask for.
    assert 'scope="mcp:tools mcp:use"' in _post(gw.url, "not.a.jwt").headers["www-authenticate"]
    async with connect(gw.url, key.sign(claims(gw.url, scope="mcp:use mcp:tools"))) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["leaky.echo"]


@pytest.mark.e2e
def test_protected_resource_metadata_names_the_issuer_and_the_scopes(
    make_gateway: GatewayFactory, jwks_server: JWKSServer
) -> None:
    gw = make_gateway(POLICY, oauth=_oauth(jwks_server, required_scopes=["mcp:tools"]))
    metadata = httpx.get(f"{gw.base}/.well-known/oauth-protected-resource/mcp").json()
    assert metadata["resource"] == gw.url
    assert metadata["authorization_servers"] == [ISSUER]
    assert metadata["scopes_supported"] == ["admin", "mcp:tools", "secrets:read"]
    assert jwks_server.requests == 0  # no key fetch until a token needs one


@pytest.mark.e2e
def test_a_refreshed_token_keeps_its_session_and_another_clients_token_does_not(
    make_gateway: GatewayFactory, jwks_server: JWKSServer
) -> None:
    gw = make_gateway(POLICY, oauth=_oauth(jwks_server))
    key = rsa_key()
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    first = key.sign(claims(gw.url))
    opened = httpx.post(
        gw.url, json=init, headers={**headers, "Authorization": f"Bearer {first}"}, timeout=10
    )
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}

    def post_with(token: str) -> int:
        auth = {**headers, **session, "Authorization": f"Bearer {token}"}
        return httpx.post(gw.url, json=listing, headers=auth, timeout=10).status_code

    assert post_with(key.sign(claims(gw.url))) == 200  # a new jti, the same client and subject
    assert post_with(key.sign(claims(gw.url, client_id="agent-b", sub="svc-b"))) == 404
    assert post_with(key.sign(claims(gw.url, sub="someone-else"))) == 404


@pytest.mark.e2e
def test_without_an_oauth_section_a_valid_jwt_is_refused(
    make_gateway: GatewayFactory, jwks_server: JWKSServer
) -> None:
    gw = make_gateway(POLICY)
    response = _post(gw.url, rsa_key().sign(claims(gw.url)))
    assert response.status_code == 401
    assert gw.audit()[-1].detail["reason"] == "malformed token"
    assert jwks_server.requests == 0
