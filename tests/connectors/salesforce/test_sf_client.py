"""The Salesforce adapter against httpx.MockTransport: error mapping, token flows, refresh, validation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from mcp_gateway.connectors.salesforce import (
    SalesforceAuthError,
    SalesforceClient,
    SalesforceError,
    SalesforceLimitExceeded,
    SalesforceNotFound,
    SalesforceOrgSettings,
    SalesforceRequestError,
    SalesforceUnavailable,
)
from mcp_gateway.connectors.salesforce.auth import JWT_BEARER_GRANT
from mcp_gateway.connectors.salesforce.ids import is_api_name, is_record_id, to_id18
from mcp_gateway.errors import SecretNotFound, UpstreamError
from mcp_gateway.types import SecretValue

CLIENT_SECRET = "cs-TOPSECRET-0123456789"
ACCESS_TOKEN = "00D000000000001!AQ-ACCESS-TOKEN-abcdef"
OPP = to_id18("006000000000001")
LOGIN = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def rsa_pem() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def vault(values: dict[str, bytes]) -> Callable[[str], SecretValue]:
    def resolve(name: str) -> SecretValue:
        if name not in values:
            raise SecretNotFound(f"no secret `{name}`")
        return SecretValue(name, values[name])

    return resolve


def cc_settings(**extra: Any) -> SalesforceOrgSettings:
    return SalesforceOrgSettings(
        login_url=LOGIN,
        client_id="cid",
        client_secret="secret://sf-secret",
        flow="client_credentials",
        **extra,
    )


def token_ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"access_token": ACCESS_TOKEN, "instance_url": "http://127.0.0.1:9"})


def make_client(
    rest: Callable[[httpx.Request], httpx.Response],
    token: Callable[[httpx.Request], httpx.Response] = token_ok,
    settings: SalesforceOrgSettings | None = None,
    secrets: dict[str, bytes] | None = None,
) -> tuple[SalesforceClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/services/oauth2/token":
            return token(request)
        return rest(request)

    client = SalesforceClient(
        "prod",
        settings or cc_settings(),
        vault(secrets if secrets is not None else {"sf-secret": CLIENT_SECRET.encode()}),
        transport=httpx.MockTransport(handler),
    )
    return client, seen


def sf_error(status: int, code: str, message: str, fields: list[str] | None = None) -> Callable[..., Any]:
    body = [{"message": message, "errorCode": code, "fields": fields or []}]
    return lambda request: httpx.Response(status, json=body)


@pytest.mark.parametrize(
    ("status", "code", "exc_type"),
    [
        (400, "INVALID_FIELD", SalesforceRequestError),
        (400, "MALFORMED_ID", SalesforceRequestError),
        (400, "INVALID_FIELD_FOR_INSERT_UPDATE", SalesforceRequestError),
        (400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", SalesforceRequestError),
        (400, "JSON_PARSER_ERROR", SalesforceRequestError),
        (404, "NOT_FOUND", SalesforceNotFound),
        (403, "REQUEST_LIMIT_EXCEEDED", SalesforceLimitExceeded),
        (403, "INSUFFICIENT_ACCESS_OR_READONLY", SalesforceRequestError),
        (500, "UNKNOWN_EXCEPTION", SalesforceUnavailable),
    ],
)
@pytest.mark.anyio
async def test_salesforce_error_arrays_map_to_the_error_tree_with_code_and_fields(
    status: int, code: str, exc_type: type[SalesforceError]
) -> None:
    client, _ = make_client(sf_error(status, code, "Something about Amount", ["Amount"]))
    with pytest.raises(exc_type) as info:
        await client.get_record("Opportunity", OPP)
    assert isinstance(info.value, UpstreamError)
    assert info.value.error_code == code
    assert info.value.status == status
    assert info.value.fields == ("Amount",)
    assert f"`GET Opportunity/{OPP}`" in str(info.value)
    assert "Something about Amount" in str(info.value)
    await client.aclose()


@pytest.mark.parametrize(
    ("response", "exc_type"),
    [
        (httpx.Response(502, text="<html>bad gateway</html>"), SalesforceUnavailable),
        (httpx.Response(404, text="nope"), SalesforceNotFound),
        (httpx.Response(200, text="not json"), SalesforceUnavailable),
        (httpx.Response(200, json=[1, 2]), SalesforceUnavailable),
        (httpx.Response(302, headers={"Location": "https://evil.example/"}), SalesforceUnavailable),
    ],
)
@pytest.mark.anyio
async def test_undocumented_answers_are_mapped_by_status_not_trusted(
    response: httpx.Response, exc_type: type[SalesforceError]
) -> None:
    client, seen = make_client(lambda request: response)
    with pytest.raises(exc_type):
        await client.get_record("Opportunity", OPP)
    # The redirect is not followed (it would carry the bearer token elsewhere).
    assert all(r.url.host == "127.0.0.1" for r in seen)
    await client.aclose()


@pytest.mark.anyio
async def test_network_failure_is_salesforce_unavailable() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client, _ = make_client(boom)
    with pytest.raises(SalesforceUnavailable, match="unreachable"):
        await client.get_record("Opportunity", OPP)
    await client.aclose()


@pytest.mark.anyio
async def test_oauth_error_body_maps_to_auth_error_without_the_client_secret() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        # A hostile or buggy proxy echoing the form must not get the secret into our message.
        return httpx.Response(
            400, json={"error": "invalid_client", "error_description": f"bad secret {CLIENT_SECRET}"}
        )

    client, _ = make_client(lambda r: httpx.Response(204), token=refuse)
    with pytest.raises(SalesforceAuthError) as info:
        await client.get_record("Opportunity", OPP)
    assert info.value.error_code == "invalid_client"
    assert "invalid_client" in str(info.value)
    assert CLIENT_SECRET not in str(info.value)
    assert CLIENT_SECRET not in repr(info.value.args)
    await client.aclose()


@pytest.mark.anyio
async def test_rest_error_message_never_carries_the_access_token() -> None:
    client, _ = make_client(sf_error(400, "INVALID_FIELD", f"weird echo of {ACCESS_TOKEN}"))
    with pytest.raises(SalesforceRequestError) as info:
        await client.patch_record("Opportunity", OPP, {"Amount": 1})
    assert ACCESS_TOKEN not in str(info.value)
    assert "[redacted]" in str(info.value)
    await client.aclose()


@pytest.mark.anyio
async def test_client_credentials_form_and_bearer_header_are_sent() -> None:
    def rest(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
        assert request.url.params["fields"] == "Name,Amount"
        return httpx.Response(
            200,
            json={"attributes": {"type": "Opportunity"}, "Name": "x", "Amount": 5.0},
            headers={"Sforce-Limit-Info": "api-usage=7/15000"},
        )

    client, seen = make_client(rest)
    record = await client.get_record("Opportunity", OPP, ["Name", "Amount"])
    assert record == {"Name": "x", "Amount": 5.0}
    form = parse_qs(seen[0].content.decode())
    assert form == {
        "grant_type": ["client_credentials"],
        "client_id": ["cid"],
        "client_secret": [CLIENT_SECRET],
    }
    assert client.api_usage == "7/15000"
    await client.aclose()


@pytest.mark.anyio
async def test_jwt_bearer_assertion_is_rs256_with_iss_sub_aud_and_short_exp(
    rsa_pem: tuple[bytes, bytes],
) -> None:
    private, public = rsa_pem
    claims: dict[str, Any] = {}

    def token(request: httpx.Request) -> httpx.Response:
        form = parse_qs(request.content.decode())
        assert form["grant_type"] == [JWT_BEARER_GRANT]
        assert jwt.get_unverified_header(form["assertion"][0])["alg"] == "RS256"
        claims.update(jwt.decode(form["assertion"][0], public, algorithms=["RS256"], audience=LOGIN))
        return token_ok(request)

    settings = SalesforceOrgSettings(
        login_url=LOGIN,
        client_id="cid",
        flow="jwt_bearer",
        username="int@acme.example",
        private_key="secret://k",
    )
    client, _ = make_client(lambda r: httpx.Response(204), token, settings, {"k": private})
    await client.patch_record("Opportunity", OPP, {"Amount": 1})
    assert claims["iss"] == "cid" and claims["sub"] == "int@acme.example" and claims["aud"] == LOGIN
    assert 0 < claims["exp"] - time.time() <= 180
    await client.aclose()


@pytest.mark.anyio
async def test_token_is_cached_and_refreshed_exactly_once_on_invalid_session() -> None:
    calls = {"rest": 0}

    def rest(request: httpx.Request) -> httpx.Response:
        calls["rest"] += 1
        if calls["rest"] == 2:
            return sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")(request)
        return httpx.Response(200, json={"Id": OPP})

    client, _ = make_client(rest)
    await client.get_record("Opportunity", OPP)
    await client.get_record("Opportunity", OPP)  # 401 → refresh → retry
    assert client.token_requests == 2
    assert calls["rest"] == 3
    await client.aclose()


@pytest.mark.anyio
async def test_a_second_consecutive_401_is_an_error_not_a_loop() -> None:
    client, seen = make_client(sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid"))
    with pytest.raises(SalesforceAuthError, match="freshly issued session"):
        await client.get_record("Opportunity", OPP)
    assert client.token_requests == 2
    assert len(seen) == 4  # token, 401, token, 401
    await client.aclose()


@pytest.mark.parametrize(
    ("sobject", "record_id", "fields", "code"),
    [
        ("Opportunity/../User", OPP, None, "INVALID_TYPE"),
        ("Opportunity?x=1", OPP, None, "INVALID_TYPE"),
        ("Opportunity", "006000000000001XYZ", None, "MALFORMED_ID"),  # wrong checksum
        ("Opportunity", "006/../005", None, "MALFORMED_ID"),
        ("Opportunity", "0060000", None, "MALFORMED_ID"),
        ("Opportunity", OPP, ["Amount,Id"], "INVALID_FIELD"),
        ("Opportunity", OPP, ["Amount&x=1"], "INVALID_FIELD"),
    ],
)
@pytest.mark.anyio
async def test_bad_names_and_ids_are_refused_before_any_request(
    sobject: str, record_id: str, fields: list[str] | None, code: str
) -> None:
    client, seen = make_client(lambda r: httpx.Response(200, json={}))
    with pytest.raises(SalesforceRequestError) as info:
        await client.get_record(sobject, record_id, fields)
    assert info.value.error_code == code
    assert seen == []
    await client.aclose()


@pytest.mark.anyio
async def test_a_token_response_pointing_at_plain_http_remote_host_is_refused() -> None:
    def token(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"access_token": ACCESS_TOKEN, "instance_url": "http://evil.example"})

    client, seen = make_client(lambda r: httpx.Response(200, json={}), token)
    with pytest.raises(SalesforceUnavailable, match="instance_url"):
        await client.get_record("Opportunity", OPP)
    assert len(seen) == 1
    await client.aclose()


@pytest.mark.anyio
async def test_vault_errors_propagate_unchanged() -> None:
    client, seen = make_client(lambda r: httpx.Response(200, json={}), secrets={})
    with pytest.raises(SecretNotFound):
        await client.get_record("Opportunity", OPP)
    assert seen == []
    await client.aclose()


@pytest.mark.anyio
async def test_an_unusable_private_key_is_an_auth_error_that_names_only_the_reference() -> None:
    settings = SalesforceOrgSettings(
        login_url=LOGIN, client_id="cid", flow="jwt_bearer", username="u", private_key="secret://k"
    )
    client, _ = make_client(
        lambda r: httpx.Response(204), settings=settings, secrets={"k": b"not-a-key-VALUE"}
    )
    with pytest.raises(SalesforceAuthError) as info:
        await client.patch_record("Opportunity", OPP, {"Amount": 1})
    assert "secret://k" in str(info.value)
    assert "not-a-key-VALUE" not in str(info.value)
    await client.aclose()


def test_ids_accept_15_and_checksummed_18_character_forms() -> None:
    assert to_id18("001000000000001") == "001000000000001AAA"
    assert to_id18("0015000000aBcDe") == "0015000000aBcDeAAK"
    assert is_record_id("0015000000aBcDe") and is_record_id("0015000000aBcDeAAK")
    assert not is_record_id("0015000000aBcDeAAA")
    assert is_api_name("Custom_Object__c") and is_api_name("ns__Thing__c") and is_api_name("Amount")
    assert not is_api_name("a__b__c__d") and not is_api_name("_x") and not is_api_name("1abc")


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"login_url": LOGIN, "client_id": "c", "flow": "client_credentials"}, "client_secret"),
        ({"login_url": LOGIN, "client_id": "c", "client_secret": "inline-SECRET-value"}, "secret://"),
        (
            {"login_url": LOGIN, "client_id": "c", "flow": "jwt_bearer", "private_key": "secret://k"},
            "username",
        ),
        ({"login_url": "http://login.example", "client_id": "c", "client_secret": "secret://s"}, "https"),
        (
            {"login_url": LOGIN, "client_id": "c", "client_secret": "secret://s", "api_version": "62"},
            "api_version",
        ),
    ],
)
def test_org_settings_refuse_bad_config_without_echoing_inline_secrets(
    raw: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValidationError) as info:
        SalesforceOrgSettings.model_validate(raw)
    assert problem in str(info.value)
    assert "inline-SECRET-value" not in str(info.value)
    assert "inline-SECRET-value" not in json.dumps(
        info.value.errors(include_input=False, include_url=False, include_context=False)
    )
