"""Errors of the Salesforce adapter, mapped from Salesforce's documented error bodies.

REST errors arrive as a JSON array ``[{"message", "errorCode", "fields"}]``; OAuth errors as
``{"error", "error_description"}``. Both become one of these (all ``UpstreamError``s, so the gateway
treats them as an upstream failing). Messages are lowercase, name the request in backticks, quote
Salesforce's own message, and never carry an access token, client secret or private key.

    SalesforceError               (error_code, status, fields)
    ├── SalesforceAuthError       the token request was refused, or a fresh session was rejected too
    ├── SalesforceNotFound        NOT_FOUND: no such sObject, record or API version
    ├── SalesforceRequestError    the request is invalid: INVALID_FIELD, MALFORMED_ID,
    │                             INVALID_FIELD_FOR_INSERT_UPDATE, FIELD_CUSTOM_VALIDATION_EXCEPTION,
    │                             JSON_PARSER_ERROR, ... (also raised before sending, for bad names/ids)
    ├── SalesforceLimitExceeded   REQUEST_LIMIT_EXCEEDED: the org's API request limit is used up
    └── SalesforceUnavailable     network failure, timeout, 5xx, or a body that is not the documented shape
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mcp_gateway.errors import UpstreamError

_MAX_MESSAGE = 500


class SalesforceError(UpstreamError):
    """Salesforce refused or failed a request.

    Args:
        message: lowercase, no secret values.
        error_code: Salesforce's ``errorCode`` (or the OAuth ``error``), empty when there is none.
        status: the HTTP status, or None when the request was never answered (or never sent).
        fields: the fields Salesforce named in the error.
    """

    def __init__(
        self, message: str, *, error_code: str = "", status: int | None = None, fields: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.status = status
        self.fields = tuple(fields)

    def facts(self) -> dict[str, Any]:
        """Structured facts for a tool error's audit detail (no secret values)."""
        return {"error_code": self.error_code, "status": self.status, "fields": list(self.fields)}


class SalesforceAuthError(SalesforceError):
    """The token endpoint refused the credentials, or Salesforce rejected a freshly issued session."""


class SalesforceNotFound(SalesforceError):
    """No such sObject type, record, or API version."""


class SalesforceRequestError(SalesforceError):
    """Salesforce (or the adapter, before sending) refused the request as invalid."""


class SalesforceLimitExceeded(SalesforceError):
    """The org has used up its API request limit."""


class SalesforceUnavailable(SalesforceError):
    """Salesforce could not be reached, failed (5xx), or answered something undocumented."""


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each non-trivial secret replaced, then length-capped.

    Salesforce does not echo credentials in its messages; this is a second line of defence for
    messages built from its answers (and from proxies in between that might).
    """
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + "..."
    return text


def rest_error(
    status: int, errors: Sequence[tuple[str, str, Sequence[str]]], request: str, secrets: Iterable[str]
) -> SalesforceError:
    """Map a REST error array (already parsed into (errorCode, message, fields)) to an exception.

    Args:
        status: HTTP status of the answer.
        errors: the array's entries; the first decides the exception class.
        request: what was asked, e.g. "GET Opportunity/006...", shown in backticks.
        secrets: values that must not appear in the message.
    """
    code, _, fields = errors[0] if errors else ("", "", ())
    text = "; ".join(f"{c}: {m}" if c else m for c, m, _ in errors) or f"http {status}"
    message = scrub(f"salesforce refused `{request}` (http {status}): {text}", secrets)
    cls: type[SalesforceError]
    if code == "REQUEST_LIMIT_EXCEEDED":
        cls = SalesforceLimitExceeded
    elif code == "INVALID_SESSION_ID" or status == 401:
        cls = SalesforceAuthError
    elif code in {"NOT_FOUND", "ENTITY_IS_DELETED"} or status == 404:
        cls = SalesforceNotFound
    elif status >= 500:
        cls = SalesforceUnavailable
    else:
        cls = SalesforceRequestError
    return cls(message, error_code=code, status=status, fields=fields)
