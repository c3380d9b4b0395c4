"""Configuration of the Salesforce orgs the ``salesforce`` toolset may reach.

``gateway.yaml`` shape (the lead nests this mapping under ``Settings``)::

    salesforce:
      prod:
        login_url: https://login.salesforce.com      # or a My Domain / the emulator's URL
        api_version: v62.0
        flow: jwt_bearer                             # or client_credentials
        client_id: 3MVG9...                          # the connected app's consumer key (not a secret)
        username: integration@example.com            # jwt_bearer: the user the token is issued for
        private_key: secret://sf-prod-key            # jwt_bearer: PEM of the RSA key (RS256)
      sandbox:
        login_url: https://mycompany--dev.sandbox.my.salesforce.com
        flow: client_credentials
        client_id: 3MVG9...
        client_secret: secret://sf-dev-secret

Credentials are never inline: ``client_secret`` and ``private_key`` must be ``secret://NAME``
references, resolved through the vault each time a token is requested. Plain ``http://`` is
accepted only for loopback hosts (the emulator); anything else must be ``https://``.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from mcp_gateway.types import SECRET_REF


def _secret_ref(value: str) -> str:
    if not SECRET_REF.fullmatch(value):
        raise ValueError("credentials must be a `secret://NAME` reference, not an inline value")
    return value


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(value: str) -> str:
    """``value`` without a trailing slash, if it is an https URL (or http on loopback) with no path extras.

    Raises:
        ValueError: any other URL (the message does not echo it).
    """
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url must be an absolute http(s) URL")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError("url must use https (plain http is allowed only on loopback)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("url must not carry a query, fragment or credentials")
    return value.rstrip("/")


SecretRef = Annotated[str, AfterValidator(_secret_ref)]
"""A ``secret://NAME`` reference (validated); never a credential value."""

BaseUrl = Annotated[str, AfterValidator(check_base_url)]


def secret_name(ref: str) -> str:
    """The vault name inside a ``secret://NAME`` reference.

    Raises:
        ValueError: ``ref`` is not a reference (the message does not echo it: it may be a credential).
    """
    match = SECRET_REF.fullmatch(ref)
    if match is None:
        raise ValueError("not a `secret://NAME` reference")
    return match.group(1)


class SalesforceOrgSettings(BaseModel):
    """One Salesforce org and how the gateway authenticates to it.

    Attributes:
        login_url: where ``/services/oauth2/token`` lives (login.salesforce.com, a My Domain, the emulator).
        api_version: REST API version, ``vNN.N``.
        client_id: the connected app's consumer key.
        client_secret: ``secret://`` reference to the consumer secret (client_credentials).
        username: the Salesforce user the JWT is issued for (jwt_bearer).
        private_key: ``secret://`` reference to the PEM RSA private key (jwt_bearer).
        flow: which OAuth 2.0 flow obtains tokens.
        audience: the JWT ``aud``; defaults to ``login_url`` (set it to https://login.salesforce.com
            or https://test.salesforce.com when ``login_url`` is a My Domain).
        timeout_seconds: per-request timeout.
        allow_private_network: let requests reach loopback/private addresses (the emulator); off, the
            SSRF guard checks every request, including those to the ``instance_url`` a token names.
    """

    # An inline secret put where a reference belongs must not be echoed back in a validation error.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    login_url: BaseUrl
    api_version: str = Field(default="v62.0", pattern=r"^v\d{2,3}\.0$")
    client_id: str = Field(min_length=1, max_length=256)
    client_secret: SecretRef | None = None
    username: str | None = Field(default=None, min_length=1, max_length=256)
    private_key: SecretRef | None = None
    flow: Literal["client_credentials", "jwt_bearer"] = "client_credentials"
    audience: BaseUrl | None = None
    timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    allow_private_network: bool = False

    @model_validator(mode="after")
    def _flow_needs_its_credentials(self) -> SalesforceOrgSettings:
        if self.flow == "client_credentials" and self.client_secret is None:
            raise ValueError("flow `client_credentials` needs `client_secret`")
        if self.flow == "jwt_bearer" and (self.username is None or self.private_key is None):
            raise ValueError("flow `jwt_bearer` needs `username` and `private_key`")
        return self

    @property
    def jwt_audience(self) -> str:
        """The ``aud`` claim of JWT-bearer assertions."""
        return self.audience or self.login_url
