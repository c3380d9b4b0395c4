"""Obtaining Salesforce access tokens: OAuth 2.0 client-credentials and JWT-bearer flows.

Both flows POST a form to ``{login_url}/services/oauth2/token`` and get back ``access_token`` and
``instance_url`` (the host every REST call then goes to). Salesforce answers neither with an expiry,
so tokens are cached until a REST call is refused with ``INVALID_SESSION_ID`` (see ``client.py``).
Credentials are resolved from the vault for each token request and never kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from mcp_gateway.connectors.netguard import BlockedAddress
from mcp_gateway.connectors.salesforce.config import SalesforceOrgSettings, check_base_url, secret_name
from mcp_gateway.connectors.salesforce.errors import (
    SalesforceAuthError,
    SalesforceRequestError,
    SalesforceUnavailable,
    scrub,
)
from mcp_gateway.types import SecretValue

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_PATH = "/services/oauth2/token"  # noqa: S105 -- a URL path, not a password
# Salesforce accepts assertions that expire within a few minutes; 3 is its documented maximum.
ASSERTION_LIFETIME_SECONDS = 170


@dataclass(frozen=True)
class SessionToken:
    """An access token and the instance it is valid for. ``repr`` hides the token."""

    access_token: str = field(repr=False)
    instance_url: str
    issued_at: float


ResolveSecret = Callable[[str], SecretValue]


class TokenSource:
    """Requests tokens for one org with its configured flow.

    Args:
        org: the org's name in config (for messages).
        settings: the org's settings.
        resolve_secret: vault lookup by secret name (raises ``VaultSealed``/``SecretNotFound``, which
            propagate unchanged: they are the gateway's errors, not Salesforce's).
        clock: seconds since the epoch (injectable for tests).
    """

    def __init__(
        self,
        org: str,
        settings: SalesforceOrgSettings,
        resolve_secret: ResolveSecret,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._org = org
        self._settings = settings
        self._resolve = resolve_secret
        self._clock = clock

    async def fetch(self, http: httpx.AsyncClient) -> SessionToken:
        """Request a new access token.

        Raises:
            SalesforceAuthError: the token endpoint refused (OAuth ``error`` + ``error_description``).
            SalesforceUnavailable: network failure, 5xx, or an undocumented answer.
        """
        form, secrets = self._form()
        url = self._settings.login_url + TOKEN_PATH
        try:
            response = await http.post(url, data=form, headers={"Accept": "application/json"})
        except BlockedAddress as exc:
            raise SalesforceRequestError(f"salesforce org `{self._org}`: {exc}") from None
        except httpx.HTTPError as exc:
            raise SalesforceUnavailable(
                f"salesforce token endpoint of org `{self._org}` unreachable: {type(exc).__name__}"
            ) from exc
        body = _json(response)
        if response.status_code != 200:
            raise self._refusal(response.status_code, body, secrets)
        if not isinstance(body, dict):
            raise SalesforceUnavailable(
                f"salesforce token endpoint of org `{self._org}` answered an undocumented body",
                status=response.status_code,
            )
        token, instance = body.get("access_token"), body.get("instance_url")
        if not isinstance(token, str) or not token or not isinstance(instance, str):
            raise SalesforceUnavailable(
                f"salesforce token response of org `{self._org}` lacks `access_token` or `instance_url`",
                status=response.status_code,
            )
        try:
            instance = check_base_url(instance)
        except ValueError as exc:
            # A token endpoint must not be able to send the token to a plain-http remote host.
            raise SalesforceUnavailable(
                f"salesforce token response of org `{self._org}` has an unusable `instance_url`: {exc}"
            ) from None
        return SessionToken(token, instance, self._clock())

    def _form(self) -> tuple[dict[str, str], list[str]]:
        """The token request form and the secret values in it (for scrubbing messages)."""
        settings = self._settings
        if settings.flow == "client_credentials":
            assert settings.client_secret is not None  # noqa: S101 -- guaranteed by the settings validator
            secret = self._resolve(secret_name(settings.client_secret)).reveal_text()
            form = {
                "grant_type": "client_credentials",
                "client_id": settings.client_id,
                "client_secret": secret,
            }
            return form, [secret]
        assert settings.private_key is not None and settings.username is not None  # noqa: S101 -- as above
        key = self._resolve(secret_name(settings.private_key)).reveal()
        now = int(self._clock())
        claims = {
            "iss": settings.client_id,
            "sub": settings.username,
            "aud": settings.jwt_audience,
            "exp": now + ASSERTION_LIFETIME_SECONDS,
        }
        try:
            assertion = jwt.encode(claims, key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise SalesforceAuthError(
                f"private key `{settings.private_key}` of org `{self._org}` is not a usable RSA key "
                f"({type(exc).__name__})"
            ) from None
        return {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}, [
            key.decode("utf-8", "replace"),
            assertion,
        ]

    def _refusal(self, status: int, body: Any, secrets: list[str]) -> Exception:
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            description = body.get("error_description")
            text = body["error"] + (f": {description}" if isinstance(description, str) else "")
            cls: type[SalesforceAuthError | SalesforceUnavailable] = (
                SalesforceUnavailable if status >= 500 else SalesforceAuthError
            )
            return cls(
                scrub(f"salesforce refused a token for org `{self._org}` (http {status}): {text}", secrets),
                error_code=body["error"],
                status=status,
            )
        return SalesforceUnavailable(
            f"salesforce token endpoint of org `{self._org}` answered http {status} without an oauth error",
            status=status,
        )


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
