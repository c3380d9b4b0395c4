"""Salesforce REST adapter (OAuth client-credentials / JWT-bearer, sObject GET/PATCH) and its emulator.

``client.SalesforceClient`` is the adapter; ``emulator`` is a test/demo double served by the tests and
the quickstart. The ``salesforce`` toolset built on them lives in ``mcp_gateway.tools.salesforce``.
"""

from __future__ import annotations

from mcp_gateway.connectors.salesforce.client import SalesforceApi, SalesforceClient
from mcp_gateway.connectors.salesforce.config import SalesforceOrgSettings
from mcp_gateway.connectors.salesforce.errors import (
    SalesforceAuthError,
    SalesforceError,
    SalesforceLimitExceeded,
    SalesforceNotFound,
    SalesforceRequestError,
    SalesforceUnavailable,
)

__all__ = [
    "SalesforceApi",
    "SalesforceAuthError",
    "SalesforceClient",
    "SalesforceError",
    "SalesforceLimitExceeded",
    "SalesforceNotFound",
    "SalesforceOrgSettings",
    "SalesforceRequestError",
    "SalesforceUnavailable",
]
