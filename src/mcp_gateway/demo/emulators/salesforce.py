"""A contract-faithful Salesforce emulator: OAuth token endpoint + sObject record GET/PATCH.

A TEST/DEMO DOUBLE for the tests and the quickstart, never a production component. It answers the
way Salesforce documents, so the adapter is tested against the real contract over real HTTP:

    POST  /services/oauth2/token                     client_credentials | jwt-bearer → 200 token JSON,
                                                     or 400 {"error", "error_description"}
    GET   /services/data/vNN.N/sobjects/{O}/{id}     200 record (with ``attributes``); ?fields=A,B
    PATCH /services/data/vNN.N/sobjects/{O}/{id}     204; JSON body of field → value

REST errors are ``[{"message", "errorCode", "fields"}]`` with Salesforce's status codes: 401
INVALID_SESSION_ID, 403 REQUEST_LIMIT_EXCEEDED, 404 NOT_FOUND, 400 MALFORMED_ID / INVALID_FIELD /
INVALID_FIELD_FOR_INSERT_UPDATE / JSON_PARSER_ERROR / FIELD_CUSTOM_VALIDATION_EXCEPTION / ... Every
REST answer carries ``Sforce-Limit-Info: api-usage=N/LIMIT``. Tests drive it from Python through
``SalesforceEmulator`` (expire tokens, inspect token requests, change a record behind the gateway's back).
That state, and the ``EmulatedOrg`` it hosts, live in ``salesforce_state.py``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import jwt
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcp_gateway.connectors.salesforce.auth import JWT_BEARER_GRANT
from mcp_gateway.connectors.salesforce.ids import is_record_id, to_id18
from mcp_gateway.demo.emulators.salesforce_data import (
    SCHEMAS,
    FieldError,
    coerce,
    validation_rules,
)
from mcp_gateway.demo.emulators.salesforce_state import EmulatedOrg, SalesforceEmulator

# JWT assertions may expire at most this far ahead (Salesforce allows a few minutes plus clock skew).
MAX_ASSERTION_SECONDS = 300


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _rest_error(
    status: int, code: str, message: str, fields: tuple[str, ...] = (), headers: dict[str, str] | None = None
) -> Response:
    body: dict[str, Any] = {"message": message, "errorCode": code}
    if code != "INVALID_SESSION_ID":
        body["fields"] = list(fields)
    return JSONResponse([body], status_code=status, headers=headers)


async def _token(request: Request) -> Response:
    emulator: SalesforceEmulator = request.app.state.emulator
    form = await request.form()
    grant = str(form.get("grant_type", ""))
    outcome, response = _grant(emulator, request, grant, {k: str(v) for k, v in form.items()})
    with emulator.lock:
        emulator.token_requests.append(
            {"grant_type": grant, "client_id": str(form.get("client_id", "")), "outcome": outcome}
        )
    return response


def _grant(
    emulator: SalesforceEmulator, request: Request, grant: str, form: dict[str, str]
) -> tuple[str, Response]:
    if grant == "client_credentials":
        org = next((o for o in emulator.orgs if o.client_id == form.get("client_id")), None)
        if org is None:
            return "invalid_client_id", _oauth_error("invalid_client_id", "client identifier invalid")
        if org.client_secret is None or not hmac.compare_digest(
            org.client_secret.encode(), form.get("client_secret", "").encode()
        ):
            return "invalid_client", _oauth_error("invalid_client", "invalid client credentials")
    elif grant == JWT_BEARER_GRANT:
        org_or_error = _verify_assertion(emulator, request, form.get("assertion", ""))
        if isinstance(org_or_error, str):
            return "invalid_grant", _oauth_error("invalid_grant", org_or_error)
        org = org_or_error
    else:
        return "unsupported_grant_type", _oauth_error("unsupported_grant_type", "grant type not supported")
    token = emulator.issue(org)
    base = str(request.base_url).rstrip("/")
    issued_at = str(int(emulator.clock() * 1000))
    identity = f"{base}/id/{org.org_id}/{to_id18('005000000000001')}"
    signature = base64.b64encode(
        hmac.new(
            (org.client_secret or org.client_id).encode(), (identity + issued_at).encode(), hashlib.sha256
        ).digest()
    ).decode()
    body = {
        "access_token": token,
        "instance_url": base,
        "id": identity,
        "token_type": "Bearer",
        "issued_at": issued_at,
        "signature": signature,
        "scope": "api",
    }
    return "ok", JSONResponse(body)


def _verify_assertion(emulator: SalesforceEmulator, request: Request, assertion: str) -> EmulatedOrg | str:
    """The org the assertion is valid for, or the ``error_description`` Salesforce would give."""
    try:
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        return "invalid assertion"
    org = next((o for o in emulator.orgs if o.client_id == unverified.get("iss")), None)
    if org is None or org.public_key_pem is None:
        return "invalid client identifier"
    audiences = [
        str(request.base_url).rstrip("/"),
        "https://login.salesforce.com",
        "https://test.salesforce.com",
    ]
    try:
        claims = jwt.decode(
            assertion,
            org.public_key_pem,
            algorithms=["RS256"],
            audience=audiences,
            options={"require": ["iss", "sub", "aud", "exp"]},
            leeway=5,
        )
    except jwt.ExpiredSignatureError:
        return "expired authorization code"
    except jwt.InvalidAudienceError:
        return "audience is invalid"
    except jwt.PyJWTError:
        return "invalid assertion"
    if claims["exp"] > emulator.clock() + MAX_ASSERTION_SECONDS:
        return "invalid assertion: exp too far in the future"
    if org.username is None or claims["sub"] != org.username:
        return "user hasn't approved this consumer"
    return org


def _authenticate(emulator: SalesforceEmulator, request: Request) -> EmulatedOrg | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() not in ("bearer", "oauth") or not token:
        return None
    with emulator.lock:
        session = emulator.sessions.get(token.strip())
        if session is None or session.expires_at <= emulator.clock():
            return None
        return session.org


async def _sobject(request: Request) -> Response:
    emulator: SalesforceEmulator = request.app.state.emulator
    org = _authenticate(emulator, request)
    if org is None:
        return _rest_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
    with emulator.lock:
        org.api_usage += 1
        usage = org.api_usage
    limit = {"Sforce-Limit-Info": f"api-usage={usage}/{org.api_limit}"}
    if usage > org.api_limit:
        return _rest_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", headers=limit)
    response = _handle(
        emulator,
        org,
        request.path_params,
        request.method,
        request.query_params.get("fields"),
        await request.body(),
    )
    response.headers.update(limit)
    return response


def _handle(
    emulator: SalesforceEmulator,
    org: EmulatedOrg,
    params: dict[str, Any],
    method: str,
    fields: str | None,
    raw: bytes,
) -> Response:
    version, sobject, record_id = params["version"], params["sobject"], params["record_id"]
    spec = SCHEMAS.get(sobject)
    if not _supported_version(version) or spec is None:
        return _rest_error(404, "NOT_FOUND", "The requested resource does not exist")
    if not is_record_id(record_id):
        # Salesforce reads a non-id in this position as an external id value it cannot match.
        return _rest_error(
            404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {record_id}"
        )
    if not record_id.startswith(spec.key_prefix):
        return _rest_error(
            400, "MALFORMED_ID", f"{sobject} ID: id value of incorrect type: {record_id}", ("Id",)
        )
    key = to_id18(record_id)
    with emulator.lock:
        record = org.records.get(sobject, {}).get(key)
        if record is None or record.get("IsDeleted"):
            return _rest_error(404, "NOT_FOUND", "The requested resource does not exist")
        if method == "GET":
            return _get(sobject, version, record, fields)
        return _patch(sobject, spec.fields, record, raw)


def _supported_version(version: str) -> bool:
    head, dot, tail = version.partition(".")
    return (
        head.startswith("v")
        and head[1:].isdigit()
        and dot == "."
        and tail == "0"
        and 20 <= int(head[1:]) <= 66
    )


def _get(sobject: str, version: str, record: dict[str, Any], fields: str | None) -> Response:
    wanted = [name.strip() for name in fields.split(",")] if fields else list(record)
    unknown = [name for name in wanted if name not in SCHEMAS[sobject].fields]
    if unknown:
        return _rest_error(
            400,
            "INVALID_FIELD",
            f"No such column '{unknown[0]}' on entity '{sobject}'. If you are attempting to use a custom "
            "field, be sure to append the '__c' after the custom field name. Please reference your WSDL or "
            "the describe call for the appropriate names.",
        )
    url = f"/services/data/{version}/sobjects/{sobject}/{record['Id']}"
    body = {"attributes": {"type": sobject, "url": url}, **{name: record.get(name) for name in wanted}}
    return JSONResponse(body)


def _patch(sobject: str, specs: dict[str, Any], record: dict[str, Any], raw: bytes) -> Response:
    try:
        values = json.loads(raw or b"null")
    except ValueError:
        return _rest_error(400, "JSON_PARSER_ERROR", "Unexpected character: was expecting a JSON value")
    if not isinstance(values, dict):
        return _rest_error(
            400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from a non-object"
        )
    for name in values:
        if name not in specs:
            return _rest_error(
                400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}", ()
            )
    read_only = [name for name in values if not specs[name].updateable]
    if read_only:
        return _rest_error(
            400,
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            f"Unable to create/update fields: {', '.join(read_only)}. Please check the security settings "
            "of this field and verify that it is read/write for your profile or permission set.",
            tuple(read_only),
        )
    try:
        updated = {name: coerce(sobject, name, specs[name], value) for name, value in values.items()}
    except FieldError as exc:
        return _rest_error(400, exc.code, exc.message, exc.fields)
    candidate = {**record, **updated}
    problem = validation_rules(sobject, candidate)
    if problem is not None:
        return _rest_error(400, problem.code, problem.message, problem.fields)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    record.update(updated, LastModifiedDate=now, SystemModstamp=now)
    return Response(status_code=204)


def create_app(*orgs: EmulatedOrg, clock: Callable[[], float] = time.time) -> Starlette:
    """The emulator as a Starlette app; ``app.state.emulator`` is its ``SalesforceEmulator``.

    Args:
        orgs: the orgs it hosts (at least one).
        clock: seconds since the epoch (token expiry, assertion checks).
    """
    if not orgs:
        raise ValueError("the salesforce emulator needs at least one org")
    app = Starlette(
        routes=[
            Route("/services/oauth2/token", _token, methods=["POST"]),
            Route(
                "/services/data/{version}/sobjects/{sobject}/{record_id}", _sobject, methods=["GET", "PATCH"]
            ),
        ]
    )
    app.state.emulator = SalesforceEmulator(tuple(orgs), clock)
    return app


class EmulatorServer:
    """Serve an emulator app with uvicorn in a daemon thread on 127.0.0.1 (tests, quickstart).

    Args:
        app: from ``create_app``.
        port: a free TCP port.
    """

    def __init__(self, app: Starlette, port: int, host: str = "127.0.0.1") -> None:
        self.app = app
        self.url = f"http://{host}:{port}"
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        )
        self._thread = threading.Thread(target=self._server.run, name="salesforce-emulator", daemon=True)

    @property
    def emulator(self) -> SalesforceEmulator:
        state: SalesforceEmulator = self.app.state.emulator
        return state

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; returns once uvicorn listens (bounded wait).

        Raises:
            RuntimeError: not listening within ``timeout`` seconds.
        """
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"salesforce emulator did not start on `{self.url}`")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving and join the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
