"""The gateway's one exception hierarchy.

Only ``http/`` turns these into protocol errors. No message may carry a secret value:
messages name things (a secret's *name*, a file, a rule id), never their contents.

    GatewayError
    ├── ConfigError                  gateway.yaml is unreadable or invalid
    ├── PolicyError
    │   └── PolicyLoadError          policy YAML failed to parse or validate (every problem, file:line)
    ├── AuthError                    bearer token missing, unknown, expired or revoked
    ├── CallRefused                  the gateway will not run this call (each subclass has a `kind`)
    │   ├── ToolNotGranted           unknown or ungranted tool (a protocol error; names no other tool)
    │   ├── PolicyDenied             a grant matched but a constraint or deny rule refused the arguments
    │   ├── VaultSealed              the call needs a secret and the vault has no master key
    │   ├── ToolDefinitionChanged    the upstream changed a pinned tool's definition; blocked until approved
    │   ├── PinRecheckFailed         a definition due for a re-check could not be re-listed; refused
    │   ├── InvalidArguments         arguments a built-in's input model refuses, or not valid Unicode
    │   ├── ApprovalRefused          a call needs approval and no approval store is configured
    │   ├── InvalidRequestState      a requestState the gateway did not mint for this call, or spent
    │   └── AuditUnavailable         the audit record could not be made durable: no audit, no act
    ├── VaultError
    │   ├── SecretNotFound           no secret by that name
    │   ├── IntegrityError           an envelope failed authentication (tampered, swapped, wrong key)
    │   └── WrongMasterKey           a well-formed master key that is not this vault's (its key check fails)
    ├── AuditError
    │   └── AuditWriteError          a sink failed to append (wrapped into AuditUnavailable on the call path)
    ├── PinError                     no such pinned tool, nothing to approve, or not the definition reviewed
    ├── StoreError                   a database store cannot be reached, set up or migrated (no DSN in it)
    ├── UpstreamError                an upstream failed, timed out or answered garbage
    └── ProtocolRefusal              an answer the agent must get as this JSON-RPC error (-32021, ...)
"""

from __future__ import annotations

from collections.abc import Sequence


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The gateway configuration is unreadable or invalid."""


class PolicyError(GatewayError):
    """A policy problem."""


class PolicyLoadError(PolicyError):
    """Policy files failed to parse or validate.

    Args:
        problems: every problem found, each already formatted as ``file:line: message``.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems) if self.problems else "invalid policy")


class AuthError(GatewayError):
    """The bearer token is missing, unknown, expired or revoked."""


class CallRefused(GatewayError):
    """The gateway refuses to run a call. ``kind`` is a stable machine-readable label."""

    kind = "refused"


class ToolNotGranted(CallRefused):
    """The tool does not exist or is not granted to the caller (deliberately indistinguishable)."""

    kind = "not_granted"


class PolicyDenied(CallRefused):
    """A grant matched the tool but its constraints or deny rules refused the arguments.

    Args:
        message: what was refused and by which constraint (no secret values).
        rule_ids: the ids of the rules that decided.
    """

    kind = "denied"

    def __init__(self, message: str, rule_ids: Sequence[str] = ()) -> None:
        self.rule_ids = tuple(rule_ids)
        super().__init__(message)


class VaultSealed(CallRefused):
    """The vault has no master key, so secrets cannot be resolved."""

    kind = "vault_sealed"


class AuditUnavailable(CallRefused):
    """The audit record could not be made durable, so the call is refused."""

    kind = "audit_unavailable"


class ToolDefinitionChanged(CallRefused):
    """The upstream now presents a definition of this tool that no admin approved (a rug pull)."""

    kind = "definition_changed"


class PinRecheckFailed(CallRefused):
    """The upstream could not be re-listed before a call whose pin check was due (fails closed)."""

    kind = "recheck_failed"


class VaultError(GatewayError):
    """A vault problem."""


class SecretNotFound(VaultError):
    """No secret is stored under the given name."""


class IntegrityError(VaultError):
    """An envelope failed authentication: tampered, swapped between names, or sealed by an unknown key."""


class WrongMasterKey(VaultError):
    """The master key given is well formed but not this vault's: the vault stays sealed."""


class AuditError(GatewayError):
    """An audit-store problem."""


class AuditWriteError(AuditError):
    """An audit sink failed to append records durably.

    Args:
        message: the full story for operators (may name the store's path or host).
        reason: what may be told to a caller, an agent included: no path, host or value.
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        self.reason = reason if reason is not None else message
        super().__init__(message)


class PinError(GatewayError):
    """A tool-pin operation cannot be done: no such tool, nothing to approve, or a stale review."""


class StoreError(GatewayError):
    """A database store (SQLite file or PostgreSQL schema) cannot be reached, set up, read or written,
    or its schema is newer than this gateway's. The message names the store and schema, never a DSN."""


class UpstreamError(GatewayError):
    """An upstream failed, timed out or answered something the gateway cannot use."""


class InvalidArguments(CallRefused):
    """Arguments no tool could take: not what a built-in tool's input model accepts, or text that is
    not valid Unicode (a lone surrogate no upstream could be sent)."""

    kind = "invalid_arguments"


class ApprovalRefused(CallRefused):
    """An approval is needed or presented and cannot be had: no approval store is configured.

    (The store's own refusals, by kind, are ``approvals.model.ApprovalError`` subclasses.)
    """

    kind = "approval_unavailable"


class InvalidRequestState(CallRefused):
    """A 2026-07-28 ``requestState`` the gateway did not mint for this caller, tool and arguments,
    or one that expired or was already used (each is good for one retry)."""

    kind = "invalid_request_state"


class ProtocolRefusal(GatewayError):
    """An answer the agent must get as this JSON-RPC error, not as a tool result: e.g. -32021, the
    upstream needs a client capability the agent did not declare.

    Args:
        message: the error's message (no secret values: it is scrubbed before it is raised).
        code: the JSON-RPC error code.
        data: the error's data, JSON-ready.
    """

    kind = "protocol_error"

    def __init__(self, message: str, *, code: int, data: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data
