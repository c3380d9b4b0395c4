"""The Salesforce REST adapter: sObject record read and update over one pooled ``httpx.AsyncClient``.

    GET   {instance}/services/data/{v}/sobjects/{SObject}/{Id}[?fields=A,B]   → 200 record JSON
    PATCH {instance}/services/data/{v}/sobjects/{SObject}/{Id}   JSON body    → 204

The token is cached with its ``instance_url``; a 401 ``INVALID_SESSION_ID`` drops it, fetches one new
token and retries the request once. A second 401 is an error, never a loop. Names and ids are checked
before any URL is built. All I/O goes through the injected transport (``httpx.MockTransport`` in tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import anyio
import httpx

from mcp_gateway.connectors.netguard import BlockedAddress, GuardedTransport
from mcp_gateway.connectors.salesforce.auth import ResolveSecret, SessionToken, TokenSource
from mcp_gateway.connectors.salesforce.config import SalesforceOrgSettings
from mcp_gateway.connectors.salesforce.errors import (
    SalesforceAuthError,
    SalesforceRequestError,
    SalesforceUnavailable,
    rest_error,
)
from mcp_gateway.connectors.salesforce.ids import is_api_name, is_record_id

FieldValue = str | int | float | bool | None


class SalesforceApi(Protocol):
    """What the ``salesforce`` toolset needs from an org."""

    async def get_record(
        self, sobject: str, record_id: str, fields: Sequence[str] | None = None
    ) -> dict[str, Any]: ...

    async def patch_record(self, sobject: str, record_id: str, values: Mapping[str, FieldValue]) -> None: ...

    async def aclose(self) -> None: ...


def check_names(sobject: str, record_id: str, fields: Sequence[str] = ()) -> None:
    """Refuse malformed object names, record ids and field names before they reach a URL or body.

    Raises:
        SalesforceRequestError: with ``error_code`` ``INVALID_TYPE``, ``MALFORMED_ID`` or ``INVALID_FIELD``.
    """
    if not is_api_name(sobject):
        raise SalesforceRequestError(
            f"`{sobject[:100]}` is not an sobject api name", error_code="INVALID_TYPE"
        )
    if not is_record_id(record_id):
        raise SalesforceRequestError(
            f"`{record_id[:100]}` is not a salesforce record id (15 or 18 characters)",
            error_code="MALFORMED_ID",
        )
    bad = [name for name in fields if not is_api_name(name)]
    if bad:
        shown = ", ".join(f"`{name[:100]}`" for name in bad[:5])
        raise SalesforceRequestError(
            f"not field api names: {shown}", error_code="INVALID_FIELD", fields=bad[:5]
        )


class SalesforceClient:
    """One org's REST client (implements ``SalesforceApi``).

    Args:
        org: the org's name in config (for messages).
        settings: the org's settings.
        resolve_secret: vault lookup by secret name, called for each token request.
        transport: httpx transport (default: real network); tests pass ``httpx.MockTransport``.
        clock: seconds since the epoch.
    """

    def __init__(
        self,
        org: str,
        settings: SalesforceOrgSettings,
        resolve_secret: ResolveSecret,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.org = org
        self._settings = settings
        self._tokens = TokenSource(org, settings, resolve_secret, clock)
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._token: SessionToken | None = None
        self._lock = anyio.Lock()
        self.token_requests = 0
        self.api_usage: str | None = None
        """The last ``Sforce-Limit-Info`` ``api-usage`` value seen (e.g. ``"25/15000"``)."""

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            # The SSRF guard checks every request: the token's instance_url is Salesforce's to choose.
            guard = GuardedTransport(allow_private_network=self._settings.allow_private_network)
            self._http = httpx.AsyncClient(
                transport=self._transport or guard,
                timeout=self._settings.timeout_seconds,
                # A redirect could carry the bearer token to another host: never follow one.
                follow_redirects=False,
                headers={"Accept": "application/json", "User-Agent": "mcp-gateway"},
            )
        return self._http

    async def aclose(self) -> None:
        """Close the pooled HTTP client (a later call opens a new one)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self._token = None

    async def get_record(
        self, sobject: str, record_id: str, fields: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """The record's fields (Salesforce's ``attributes`` entry removed).

        Args:
            sobject: API name, e.g. ``Opportunity``.
            record_id: 15- or 18-character id.
            fields: only these fields; all readable fields when None.

        Raises:
            SalesforceError: any subclass, mapped from Salesforce's answer or from local checks.
        """
        check_names(sobject, record_id, fields or ())
        params = {"fields": ",".join(fields)} if fields else None
        request = f"GET {sobject}/{record_id}"
        response = await self._request("GET", self._path(sobject, record_id), request, params=params)
        if response.status_code != 200:
            raise self._error(response, request)
        body = _json(response)
        if not isinstance(body, dict):
            raise SalesforceUnavailable(
                f"salesforce answered `{request}` with an undocumented body", status=response.status_code
            )
        body.pop("attributes", None)
        return body

    async def patch_record(self, sobject: str, record_id: str, values: Mapping[str, FieldValue]) -> None:
        """Update fields of one record (Salesforce answers 204).

        Raises:
            SalesforceError: any subclass, mapped from Salesforce's answer or from local checks.
        """
        check_names(sobject, record_id, list(values))
        if not values:
            raise SalesforceRequestError("no fields to update", error_code="INVALID_FIELD")
        request = f"PATCH {sobject}/{record_id}"
        response = await self._request("PATCH", self._path(sobject, record_id), request, json=dict(values))
        if response.status_code not in (200, 204):
            raise self._error(response, request)

    def _path(self, sobject: str, record_id: str) -> str:
        return f"/services/data/{self._settings.api_version}/sobjects/{sobject}/{record_id}"

    async def _session(self) -> SessionToken:
        async with self._lock:
            if self._token is None:
                self.token_requests += 1
                self._token = await self._tokens.fetch(self._client())
            return self._token

    async def _drop(self, token: SessionToken) -> None:
        async with self._lock:
            # Only the token that was refused: a concurrent caller may already have a new one.
            if self._token is token:
                self._token = None

    async def _request(self, method: str, path: str, request: str, **kwargs: Any) -> httpx.Response:
        token = await self._session()
        response = await self._send(token, method, path, request, **kwargs)
        if response.status_code == 401 and _error_code(response) == "INVALID_SESSION_ID":
            await self._drop(token)
            token = await self._session()
            response = await self._send(token, method, path, request, **kwargs)
            if response.status_code == 401:
                raise SalesforceAuthError(
                    f"salesforce rejected a freshly issued session for `{request}` on org `{self.org}`",
                    error_code=_error_code(response),
                    status=401,
                )
        return response

    async def _send(
        self, token: SessionToken, method: str, path: str, request: str, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token.access_token}"}
        try:
            response = await self._client().request(
                method, token.instance_url + path, headers=headers, **kwargs
            )
        except BlockedAddress as exc:
            raise SalesforceRequestError(f"salesforce org `{self.org}`: {exc}") from None
        except httpx.HTTPError as exc:
            raise SalesforceUnavailable(
                f"salesforce unreachable for `{request}` on org `{self.org}`: {type(exc).__name__}"
            ) from exc
        usage = _api_usage(response.headers.get("Sforce-Limit-Info", ""))
        if usage is not None:
            self.api_usage = usage
        return response

    def _error(self, response: httpx.Response, request: str) -> Exception:
        secrets = [self._token.access_token] if self._token is not None else []
        body = _json(response)
        if isinstance(body, list) and body and all(isinstance(item, dict) for item in body):
            errors = [
                (
                    str(item.get("errorCode", "")),
                    str(item.get("message", "")),
                    [str(f) for f in item.get("fields") or [] if isinstance(f, str)],
                )
                for item in body
            ]
            return rest_error(response.status_code, errors, request, secrets)
        if 400 <= response.status_code < 500:
            return rest_error(response.status_code, [], request, secrets)
        return SalesforceUnavailable(
            f"salesforce answered `{request}` with http {response.status_code}", status=response.status_code
        )


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_code(response: httpx.Response) -> str:
    body = _json(response)
    if isinstance(body, list) and body and isinstance(body[0], dict):
        return str(body[0].get("errorCode", ""))
    return ""


def _api_usage(header: str) -> str | None:
    """``api-usage`` from ``Sforce-Limit-Info: api-usage=25/15000`` (other entries may follow)."""
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "api-usage" and value:
            return value[:40]
    return None
