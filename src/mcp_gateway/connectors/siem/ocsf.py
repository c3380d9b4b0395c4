"""Audit records as OCSF 1.3 events (pure: no I/O).

Which class:

- **Authentication (3002)**, activity Logon, status Failure, for ``auth_failure``,
  ``admin_auth_failure`` and ``auth_failure_summary``: a bearer token that did not authenticate is a
  failed logon, and SIEM content for brute force and password spraying is written against 3002.
- **API Activity (6003)** for everything else: a ``tools/call`` (or ``resources/read``,
  ``prompts/get``...) is an API operation an actor asked of a service, which is exactly what 6003
  describes (``actor``, ``api.operation``, ``api.service``, ``api.request.uid``). The policy decision
  rides in ``actor.authorizations`` (OCSF's Authorization Result: ``decision`` and ``policy``). The
  Authorize Session class (3003) was not used: it records privileges granted to a session at logon,
  not a per-call allow/deny.

Nothing is dropped: the whole audit record (``seq``, ``hash``, ``prev_hash``, ``args``, ``detail``)
rides in ``unmapped.mcp_gateway``, so a SIEM can re-check the chain. ``metadata.uid`` is the stable
event id (``event_id``): the same record always gives the same id, so a resend after a crash is
recognisable as one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from mcp_gateway import __version__
from mcp_gateway.types import AuditRecord

OCSF_VERSION = "1.3.0"
_NAMESPACE = uuid.UUID("6f1c7a0e-3b55-5d0f-9a63-2f4e8d1b9c11")
AUTH_KINDS = frozenset({"auth_failure", "admin_auth_failure", "auth_failure_summary"})
_READS = frozenset({"resources/read", "prompts/get", "completion/complete", "resources/subscribe"})
_SEVERITY = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}
_OK = frozenset({"ok", "pinned", "aggregated"})
_HIGH_KINDS = frozenset({"audit_alarm", "alert"})


def event_id(record: AuditRecord) -> str:
    """The record's stable event id: a UUID derived from its seq and hash (the same on every resend)."""
    return str(uuid.uuid5(_NAMESPACE, f"{record.seq}:{record.hash}"))


def severity_id(record: AuditRecord) -> int:
    """OCSF severity: alarms and alerts high, refusals and failed logons low, the rest informational."""
    if record.kind in _HIGH_KINDS:
        return 4
    if record.kind == "auth_failure_summary" or record.status == "blocked":
        return 3
    if record.decision == "deny" or record.kind in AUTH_KINDS:
        return 2
    return 1


def _status_id(record: AuditRecord) -> int:
    if record.decision == "deny" or record.kind in AUTH_KINDS:
        return 2
    if record.kind == "intent" or not record.status:
        return 0  # the call has not finished; its outcome record says how it ended
    return 1 if record.status in _OK else 2


def reasons_text(detail: Mapping[str, Any]) -> str:
    """A record's reasons as one line (``detail.reasons`` joined, else ``reason`` or ``error``)."""
    reasons = detail.get("reasons")
    if isinstance(reasons, list):
        return "; ".join(str(reason) for reason in reasons)
    reason = detail.get("reason") or detail.get("error") or ""
    return str(reason)


def _message(record: AuditRecord) -> str:
    parts = [record.kind]
    if record.agent:
        parts.append(f"agent {record.agent}")
    if record.tool:
        parts.append(f"tool {record.tool}")
    if record.decision or record.status:
        parts.append("/".join(p for p in (record.decision, record.status) if p))
    return ": ".join([parts[0], " ".join(parts[1:])]) if len(parts) > 1 else parts[0]


def _base(record: AuditRecord, class_uid: int, class_name: str, category: tuple[int, str]) -> dict[str, Any]:
    severity = severity_id(record)
    status = _status_id(record)
    out: dict[str, Any] = {
        "category_uid": category[0],
        "category_name": category[1],
        "class_uid": class_uid,
        "class_name": class_name,
        "severity_id": severity,
        "severity": _SEVERITY[severity],
        "status_id": status,
        "status": {0: "Unknown", 1: "Success", 2: "Failure"}[status],
        "time": int(record.ts * 1000),
        "message": _message(record),
        "metadata": {
            "version": OCSF_VERSION,
            "uid": event_id(record),
            "sequence": record.seq,
            "log_name": "audit",
            "event_code": record.kind,
            "product": {"name": "MCP Gateway", "vendor_name": "mcp-gateway", "version": __version__},
        },
        "unmapped": {"mcp_gateway": _record_dict(record)},
    }
    if record.call_id:
        out["metadata"]["correlation_uid"] = record.call_id
    if record.status:
        out["status_code"] = record.status
    detail = reasons_text(record.detail)
    if detail:
        out["status_detail"] = detail
    return out


def _record_dict(record: AuditRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "ts": record.ts,
        "kind": record.kind,
        "call_id": record.call_id,
        "agent": record.agent,
        "tool": record.tool,
        "decision": record.decision,
        "status": record.status,
        "args": dict(record.args),
        "detail": dict(record.detail),
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


def _endpoint(detail: Mapping[str, Any]) -> dict[str, Any]:
    client = detail.get("client") or detail.get("source")
    return {"ip": client} if isinstance(client, str) and client and client != "oauth" else {}


def _authentication(record: AuditRecord) -> dict[str, Any]:
    detail = record.detail
    out = _base(record, 3002, "Authentication", (3, "Identity & Access Management"))
    user: dict[str, Any] = {}
    if record.agent:
        user["name"] = record.agent
    token_id = detail.get("token_id")
    if isinstance(token_id, str) and token_id:
        user["credential_uid"] = token_id
    out |= {
        "activity_id": 1,
        "activity_name": "Logon",
        "type_uid": 300201,
        "type_name": "Authentication: Logon",
        "user": user,
        "src_endpoint": _endpoint(detail),
        "service": {"name": "mcp-gateway-admin" if record.kind == "admin_auth_failure" else "mcp-gateway"},
        "auth_protocol_id": 99,
        "auth_protocol": "OAuth 2.0 bearer" if detail.get("source") == "oauth" else "Bearer token",
    }
    count = detail.get("aggregated")
    if isinstance(count, int):
        out["count"] = count
    return out


def _api_activity(record: AuditRecord) -> dict[str, Any]:
    detail = record.detail
    method = str(detail.get("method") or ("tools/call" if record.tool and record.call_id else record.kind))
    activity_id, activity = (2, "Read") if method in _READS else (99, "Other")
    out = _base(record, 6003, "API Activity", (6, "Application Activity"))
    user: dict[str, Any] = {"name": record.agent} if record.agent else {}
    token_id = detail.get("token_id")
    if isinstance(token_id, str) and token_id:
        user["credential_uid"] = token_id
    approver = detail.get("approver")
    actor: dict[str, Any] = {"user": user or {"name": str(approver or "mcp-gateway")}}
    if record.decision in ("allow", "deny"):
        rule_ids = detail.get("rule_ids")
        policy = {"uid": ",".join(map(str, rule_ids))} if isinstance(rule_ids, list) and rule_ids else {}
        actor["authorizations"] = [{"decision": record.decision, **({"policy": policy} if policy else {})}]
    api: dict[str, Any] = {"operation": method, "service": {"name": record.tool or "mcp-gateway"}}
    if record.call_id:
        api["request"] = {"uid": record.call_id}
    if record.kind in ("outcome", "denied"):
        api["response"] = {"code": 0 if record.status == "ok" else 1, "message": record.status}
        if record.status != "ok":
            api["response"]["error"] = record.status
    out |= {
        "activity_id": activity_id,
        "activity_name": activity if activity_id != 99 else record.kind,
        "type_uid": 600300 + activity_id,
        "type_name": f"API Activity: {activity}",
        "actor": actor,
        "api": api,
        "src_endpoint": _endpoint(detail),
    }
    if record.tool:
        out["resources"] = [{"name": record.tool, "type": "mcp tool"}]
    latency = detail.get("latency_ms")
    if isinstance(latency, int | float):
        out["duration"] = int(latency)
    return out


def to_ocsf(record: AuditRecord) -> dict[str, Any]:
    """``record`` as one OCSF event (a JSON-ready dict)."""
    if record.kind in AUTH_KINDS:
        return _authentication(record)
    return _api_activity(record)
