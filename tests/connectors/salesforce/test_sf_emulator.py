"""The adapter against the Salesforce emulator over real HTTP (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import free_port
from mcp_gateway.connectors.salesforce import (
    SalesforceAuthError,
    SalesforceClient,
    SalesforceLimitExceeded,
    SalesforceNotFound,
    SalesforceOrgSettings,
    SalesforceRequestError,
)
from mcp_gateway.demo.emulators.salesforce import EmulatorServer, create_app
from mcp_gateway.demo.emulators.salesforce_data import ACME_ID, ACME_OPPORTUNITY_ID
from mcp_gateway.demo.emulators.salesforce_state import EmulatedOrg
from mcp_gateway.types import SecretValue

SECRET = "emulator-client-SECRET-42"
OPP = ACME_OPPORTUNITY_ID

pytestmark = pytest.mark.e2e


def _keypair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[bytes, bytes]]:
    return {"good": _keypair(), "other": _keypair()}


ServerFactory = Callable[..., EmulatorServer]


@pytest.fixture
def serve(keys: dict[str, tuple[bytes, bytes]]) -> Iterator[ServerFactory]:
    started: list[EmulatorServer] = []

    def factory(**org: Any) -> EmulatorServer:
        defaults: dict[str, Any] = {
            "client_id": "cid",
            "client_secret": SECRET,
            "username": "int@acme.example",
            "public_key_pem": keys["good"][1],
        }
        server = EmulatorServer(create_app(EmulatedOrg(**{**defaults, **org})), free_port())
        server.start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


def client_for(
    server: EmulatorServer,
    keys: dict[str, tuple[bytes, bytes]],
    flow: str = "client_credentials",
    **extra: Any,
) -> SalesforceClient:
    secrets = {"sf-secret": SECRET.encode(), "sf-key": keys["good"][0], "sf-other-key": keys["other"][0]}
    settings = SalesforceOrgSettings.model_validate(
        {
            "login_url": server.url,
            "allow_private_network": True,
            "client_id": "cid",
            "flow": flow,
            "client_secret": "secret://sf-secret",
            "username": "int@acme.example",
            "private_key": "secret://sf-key",
            **extra,
        }
    )
    return SalesforceClient("prod", settings, lambda name: SecretValue(name, secrets[name]))


@pytest.mark.anyio
async def test_allowed_field_patch_lands_and_reads_back(serve: ServerFactory, keys: Any) -> None:
    server = serve()
    client = client_for(server, keys)
    assert (await client.get_record("Opportunity", OPP, ["Amount"]))["Amount"] == 1000000.0
    await client.patch_record("Opportunity", OPP, {"Amount": 1200000, "StageName": "Closed Won"})
    record = await client.get_record("Opportunity", OPP)
    assert record["Amount"] == 1200000.0 and record["StageName"] == "Closed Won"
    assert server.emulator.record("Opportunity", OPP)["Amount"] == 1200000.0
    assert client.api_usage == "3/15000"
    await client.aclose()


@pytest.mark.anyio
async def test_jwt_bearer_flow_gets_a_token_and_works(serve: ServerFactory, keys: Any) -> None:
    server = serve()
    client = client_for(server, keys, flow="jwt_bearer")
    record = await client.get_record("Account", ACME_ID[:15], ["Name"])
    assert record == {"Name": "Acme Corp"}
    assert server.emulator.token_requests[0]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert server.emulator.token_requests[0]["outcome"] == "ok"
    await client.aclose()


@pytest.mark.parametrize(
    ("flow", "extra", "code", "leaked"),
    [
        ("jwt_bearer", {"private_key": "secret://sf-other-key"}, "invalid_grant", "PRIVATE KEY"),
        ("jwt_bearer", {"username": "someone@else.example"}, "invalid_grant", "PRIVATE KEY"),
        ("jwt_bearer", {"audience": "https://elsewhere.example"}, "invalid_grant", "PRIVATE KEY"),
        ("client_credentials", {"client_id": "nope"}, "invalid_client_id", SECRET),
    ],
)
@pytest.mark.anyio
async def test_refused_token_requests_are_auth_errors_without_credentials(
    serve: ServerFactory, keys: Any, flow: str, extra: dict[str, str], code: str, leaked: str
) -> None:
    server = serve()
    client = client_for(server, keys, flow=flow, **extra)
    with pytest.raises(SalesforceAuthError) as info:
        await client.get_record("Opportunity", OPP)
    assert info.value.error_code == code
    assert leaked not in str(info.value) and SECRET not in str(info.value)
    await client.aclose()


@pytest.mark.anyio
async def test_wrong_client_secret_is_refused_and_not_echoed(serve: ServerFactory, keys: Any) -> None:
    server = serve(client_secret="the-real-one-xyz")
    client = client_for(server, keys)
    with pytest.raises(SalesforceAuthError, match="invalid_client") as info:
        await client.get_record("Opportunity", OPP)
    assert SECRET not in str(info.value) and "the-real-one-xyz" not in str(info.value)
    await client.aclose()


@pytest.mark.anyio
async def test_expired_token_is_refreshed_exactly_once_and_the_retry_succeeds(
    serve: ServerFactory, keys: Any
) -> None:
    server = serve()
    client = client_for(server, keys)
    await client.get_record("Opportunity", OPP)
    server.emulator.expire_tokens()
    record = await client.patch_record("Opportunity", OPP, {"Amount": 1100000})
    assert record is None
    assert [r["outcome"] for r in server.emulator.token_requests] == ["ok", "ok"]
    assert server.emulator.record("Opportunity", OPP)["Amount"] == 1100000.0
    await client.aclose()


@pytest.mark.anyio
async def test_second_consecutive_401_is_an_error_after_exactly_two_token_requests(
    serve: ServerFactory, keys: Any
) -> None:
    server = serve(token_ttl_seconds=0)  # every token is dead on arrival
    client = client_for(server, keys)
    with pytest.raises(SalesforceAuthError, match="freshly issued session"):
        await client.get_record("Opportunity", OPP)
    assert len(server.emulator.token_requests) == 2
    await client.aclose()


@pytest.mark.parametrize(
    ("call", "exc_type", "code", "fields", "text"),
    [
        (("get", "Invoice", OPP, None), SalesforceNotFound, "NOT_FOUND", (), "does not exist"),
        (
            ("get", "Opportunity", OPP, ["Bogus"]),
            SalesforceRequestError,
            "INVALID_FIELD",
            (),
            "No such column",
        ),
        (
            ("patch", "Opportunity", OPP, {"Bogus__c": 1}),
            SalesforceRequestError,
            "INVALID_FIELD",
            (),
            "Bogus__c",
        ),
        (
            ("patch", "Opportunity", OPP, {"CreatedDate": "2020-01-01T00:00:00Z"}),
            SalesforceRequestError,
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            ("CreatedDate",),
            "Unable to create/update",
        ),
        (
            ("get", "Opportunity", ACME_ID, None),
            SalesforceRequestError,
            "MALFORMED_ID",
            ("Id",),
            "incorrect type",
        ),
        (
            ("get", "Opportunity", "006000000000999", None),
            SalesforceNotFound,
            "NOT_FOUND",
            (),
            "does not exist",
        ),
        (
            ("patch", "Opportunity", OPP, {"Amount": -5}),
            SalesforceRequestError,
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            ("Amount",),
            "negative",
        ),
        (
            ("patch", "Opportunity", OPP, {"Amount": "lots"}),
            SalesforceRequestError,
            "JSON_PARSER_ERROR",
            (),
            "currency",
        ),
        (
            ("patch", "Opportunity", OPP, {"StageName": "Won-ish"}),
            SalesforceRequestError,
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            ("StageName",),
            "restricted picklist",
        ),
        (
            ("patch", "Opportunity", OPP, {"Name": None}),
            SalesforceRequestError,
            "REQUIRED_FIELD_MISSING",
            ("Name",),
            "Required fields",
        ),
    ],
)
@pytest.mark.anyio
async def test_salesforce_errors_from_the_emulator_are_mapped_and_clear(
    serve: ServerFactory,
    keys: Any,
    call: tuple[Any, ...],
    exc_type: type[Exception],
    code: str,
    fields: tuple[str, ...],
    text: str,
) -> None:
    server = serve()
    client = client_for(server, keys)
    before = server.emulator.record("Opportunity", OPP)
    kind, sobject, record_id, arg = call
    with pytest.raises(exc_type) as info:
        if kind == "get":
            await client.get_record(sobject, record_id, arg)
        else:
            await client.patch_record(sobject, record_id, arg)
    assert getattr(info.value, "error_code", None) == code
    assert getattr(info.value, "fields", None) == fields
    assert text in str(info.value)
    assert server.emulator.record("Opportunity", OPP) == before
    await client.aclose()


@pytest.mark.anyio
async def test_request_limit_exceeded_maps_to_its_own_error(serve: ServerFactory, keys: Any) -> None:
    server = serve(api_limit=1)
    client = client_for(server, keys)
    await client.get_record("Opportunity", OPP)
    with pytest.raises(SalesforceLimitExceeded) as info:
        await client.get_record("Opportunity", OPP)
    assert info.value.status == 403
    assert client.api_usage == "2/1"
    await client.aclose()


def test_emulator_speaks_the_documented_wire_shapes(serve: ServerFactory) -> None:
    server = serve()
    with httpx.Client(base_url=server.url) as http:
        token = http.post(
            "/services/oauth2/token",
            data={"grant_type": "client_credentials", "client_id": "cid", "client_secret": SECRET},
        )
        assert token.status_code == 200
        body = token.json()
        assert {"access_token", "instance_url", "id", "token_type", "issued_at", "signature"} <= set(body)
        assert body["instance_url"] == server.url
        bad = http.post("/services/oauth2/token", data={"grant_type": "password"})
        assert bad.status_code == 400 and set(bad.json()) == {"error", "error_description"}
        path = f"/services/data/v62.0/sobjects/Opportunity/{OPP}"
        anon = http.get(path)
        assert anon.status_code == 401
        assert anon.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
        auth = {"Authorization": f"Bearer {body['access_token']}"}
        record = http.get(path, headers=auth)
        assert record.json()["attributes"] == {"type": "Opportunity", "url": path}
        assert record.headers["Sforce-Limit-Info"] == "api-usage=1/15000"
        patched = http.patch(path, json={"Description": "hi"}, headers=auth)
        assert patched.status_code == 204 and patched.content == b""
        unknown_version = http.get(path.replace("v62.0", "v9.0"), headers=auth)
        assert unknown_version.status_code == 404
        assert unknown_version.json()[0]["errorCode"] == "NOT_FOUND"
        not_json = http.patch(path, content=b"{nope", headers=auth)
        assert not_json.status_code == 400 and not_json.json()[0]["errorCode"] == "JSON_PARSER_ERROR"


@pytest.mark.parametrize(
    ("claims", "alg", "description"),
    [
        ({"exp": 600}, "RS256", "exp too far"),
        ({"exp": -60}, "RS256", "expired"),
        ({"sub": "mallory@acme.example"}, "RS256", "approved this consumer"),
        ({"aud": "https://evil.example"}, "RS256", "audience"),
        ({}, "HS256", "invalid assertion"),
    ],
)
def test_emulator_verifies_jwt_assertions_like_salesforce(
    serve: ServerFactory, keys: Any, claims: dict[str, Any], alg: str, description: str
) -> None:
    server = serve()
    now = int(time.time())
    payload = {"iss": "cid", "sub": "int@acme.example", "aud": server.url, "exp": now + 120}
    payload.update({k: now + v if k == "exp" else v for k, v in claims.items()})
    key: Any = keys["good"][0] if alg == "RS256" else "a-shared-secret-that-is-long-enough-for-hs256"
    assertion = jwt.encode(payload, key, algorithm=alg)
    with httpx.Client(base_url=server.url) as http:
        refused = http.post(
            "/services/oauth2/token",
            data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
        )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    assert description in refused.json()["error_description"]
