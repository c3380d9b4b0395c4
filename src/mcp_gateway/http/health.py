"""``/readyz``: one bit for anyone, the reasons for admins.

Load balancers and orchestrators need only "can this replica serve?", and they ask without
credentials, so that is all an unauthenticated ``GET /readyz`` answers: ``{"ready": true}`` (200) or
``{"ready": false}`` (503). Upstream names, secret names, addresses and error texts are
reconnaissance, so they are shown only to a caller with an admin token (``Authorization: Bearer
mga_...``, checked against the admin store like the admin API); any other token gets a 401, and the
refusal is audited (``admin_auth_failure``).

Ready means all of:

- startup finished (the lifespan connected the upstreams it could and started the toolsets);
- the vault is unsealed: sealed (no key, or a key that is not the vault's) every call needing a
  secret fails and no audit checkpoint is signed, so a replica in that state must not get traffic;
- the policy is loaded: the gateway does not start without one (``build_runtime`` raises), and a
  failed reload keeps the last good policy in force, so that is shown in the detail, not unready;
  the detail also names the version in force (``policy_version``, a short content hash of the
  policy files, ``policy/version.py``) and when it was loaded, so an operator can check that every
  replica behind the load balancer serves the same policy.

The anonymous answer does not carry the version. It is no secret, but it is a hash of the policy
text, and the policy is not public: anyone who can guess a candidate edit (one agent name, one
argument bound) could confirm the guess against it. Checking agreement is an operator's job, done
with an admin token; a load balancer needs only the bit.
- every upstream marked ``required: true`` is connected (default ``false``: one optional upstream
  down should not pull every other tool out of the load balancer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcp_gateway.core.gateway import Gateway
from mcp_gateway.errors import AuthError
from mcp_gateway.http.admin import record_admin_failure
from mcp_gateway.identity.admin_tokens import AdminPrincipal

__all__ = ["readiness", "readyz_endpoint"]


_NO_STORE = {"Cache-Control": "no-store"}


def readiness(gateway: Gateway, *, started: bool) -> tuple[bool, dict[str, Any]]:
    """Whether the gateway can serve, and the detail an admin may see.

    Args:
        gateway: the running gateway.
        started: whether the lifespan's startup has finished.

    Returns:
        ``(ready, detail)``; ``detail["not_ready"]`` lists the reasons when not ready.
    """
    vault = gateway.secrets.vault
    reasons: list[str] = []
    if not started:
        reasons.append("starting")
    if vault.sealed:
        reasons.append("vault sealed")
    upstreams: dict[str, str] = {}
    required: list[str] = []
    for name, up in gateway.upstreams.items():
        upstreams[name] = "connected" if up.connected else f"unavailable: {up.last_error or 'connecting'}"
        if up.config.required:
            required.append(name)
            if not up.connected:
                reasons.append(f"required upstream `{name}` unavailable")
    ready = not reasons
    detail: dict[str, Any] = {
        "ready": ready,
        "not_ready": reasons,
        "vault": "sealed" if vault.sealed else "unsealed",
        "vault_sealed_reason": vault.seal_reason,
        "policy": "ok"
        if gateway.policy.last_error is None
        else "last reload failed; previous policy in force",
        # Which policy this replica serves: equal versions on every replica = one policy in force.
        "policy_version": gateway.policy.version,
        "policy_loaded_at": gateway.policy.loaded_at,
        # Checkpoints need the signing key from the vault; without it the chain alone protects.
        "audit_checkpoints": "signed" if gateway.audit.checkpointer is not None else "off: no key",
        # Records inherited at start that this gateway could not authenticate (``audit/inherit.py``).
        "audit": f"alarm: {gateway.audit.alarm}" if gateway.audit.alarm else "ok",
        "upstreams": upstreams,
        "required_upstreams": required,
    }
    return ready, detail


def readyz_endpoint(
    gateway: Gateway,
    started: Callable[[], bool],
    verify_admin: Callable[[str], AdminPrincipal] | None,
) -> Callable[[Request], Any]:
    """The ``/readyz`` handler.

    Args:
        gateway: the running gateway.
        started: whether startup has finished.
        verify_admin: token → admin (``SQLiteAdminStore.verify``, raises ``AuthError``); without it
            no one sees the detail.
    """

    async def readyz(request: Request) -> Response:
        ready, detail = readiness(gateway, started=started())
        status = 200 if ready else 503
        header = request.headers.get("authorization")
        if header is None:
            return JSONResponse({"ready": ready}, status_code=status, headers=_NO_STORE)
        scheme, _, token = header.partition(" ")
        token = token.strip()
        try:
            if scheme.lower() != "bearer" or not token:
                raise AuthError("missing bearer token")
            if verify_admin is None:
                raise AuthError("admin tokens are not accepted by this gateway")
            await anyio.to_thread.run_sync(verify_admin, token)
        except AuthError as exc:
            await record_admin_failure(gateway.audit, request, str(exc), token)
            return JSONResponse(
                {"error": "unauthenticated", "message": str(exc)},
                status_code=401,
                headers={**_NO_STORE, "WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return JSONResponse(detail, status_code=status, headers=_NO_STORE)

    return readyz
