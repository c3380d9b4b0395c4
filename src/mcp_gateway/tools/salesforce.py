"""The ``salesforce`` toolset: read a record, patch fields with before/after images, revert a patch.

    salesforce.get_record(org, object, id, fields)      read-only
    salesforce.patch_record(org, object, id, fields)    reads the before-image, checks approval
                                                        conditions, records before/after, PATCHes
    salesforce.revert_patch(audit_id)                   PATCHes an earlier patch's before-image back,
                                                        unless the record changed since (a record
                                                        that holds it already: "already reverted")

Which orgs, objects, fields and values an agent may touch is the policy engine's job (it sees the
arguments); this module enforces what only the tool can know: the record's current values (for the
``change_factor`` approval condition and for revert conflicts) and Salesforce's own answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import Field

from mcp_gateway.connectors.salesforce.client import FieldValue, SalesforceApi, SalesforceClient
from mcp_gateway.connectors.salesforce.config import SalesforceOrgSettings
from mcp_gateway.connectors.salesforce.errors import SalesforceError
from mcp_gateway.tools.base import BuiltinTool, NeedsApproval, ToolContext, ToolFailure, ToolInput, Toolset
from mcp_gateway.types import SecretValue

PATCH_TOOL = "salesforce.patch_record"
ClientFactory = Callable[[str, SalesforceOrgSettings, Callable[[str], SecretValue]], SalesforceApi]

_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,79}$"
_ID = r"^[A-Za-z0-9]{15}([A-Za-z0-5]{3})?$"


class GetRecordInput(ToolInput):
    """Arguments of ``salesforce.get_record``."""

    org: str = Field(min_length=1, max_length=64, description="configured org name")
    object: str = Field(pattern=_NAME, description="sObject API name, e.g. Opportunity")
    id: str = Field(pattern=_ID, description="15- or 18-character record id")
    fields: tuple[str, ...] | None = Field(
        default=None, max_length=100, description="field API names to read; all readable fields when omitted"
    )


class PatchRecordInput(ToolInput):
    """Arguments of ``salesforce.patch_record``."""

    org: str = Field(min_length=1, max_length=64, description="configured org name")
    object: str = Field(pattern=_NAME, description="sObject API name, e.g. Opportunity")
    id: str = Field(pattern=_ID, description="15- or 18-character record id")
    fields: dict[str, FieldValue] = Field(
        min_length=1, max_length=100, description="field API name → new value (null clears the field)"
    )


class RevertPatchInput(ToolInput):
    """Arguments of ``salesforce.revert_patch``."""

    audit_id: str = Field(
        min_length=1, max_length=128, description="the `audit_id` a salesforce.patch_record call returned"
    )


def _number(value: Any) -> float | None:
    """``value`` as a finite number, or None when it is not one (booleans are not numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def change_factor_exceeded(old: Any, new: Any, over: float) -> str | None:
    """Why changing ``old`` to ``new`` exceeds ``over`` times, or None when it does not.

    A change from empty/zero to a non-zero value, a sign flip, and any non-numeric side count as
    exceeding (a condition that cannot be evaluated must not let the call through unapproved).
    """
    if old == new:
        return None
    a = 0.0 if old is None else _number(old)
    b = 0.0 if new is None else _number(new)
    if a is None or b is None:
        return f"changes from `{old}` to `{new}`, which is not a numeric change that can be checked"
    if a == b:
        return None
    if a == 0 or b == 0:
        return f"changes from `{old}` to `{new}` (to or from zero)"
    if (a < 0) != (b < 0):
        return f"changes sign from `{old}` to `{new}`"
    factor = max(abs(b) / abs(a), abs(a) / abs(b))
    if factor > over:
        return f"changes by {factor:.1f}x (from `{old}` to `{new}`), over {over:g}x"
    return None


def _approval_reasons(ctx: ToolContext, before: Mapping[str, Any], proposed: Mapping[str, Any]) -> list[str]:
    """Reasons the approval conditions of ``ctx`` hold for this change.

    Raises:
        ToolFailure: a condition this tool does not understand (a policy error; never ignored).
    """
    reasons = []
    for condition in ctx.approval_conditions:
        spec = condition.get("change_factor") if isinstance(condition, Mapping) else None
        if not isinstance(spec, Mapping) or set(condition) != {"change_factor"}:
            raise ToolFailure(
                f"approval condition `{sorted(condition) if isinstance(condition, Mapping) else condition}` "
                "is not supported by the salesforce tools",
                {"condition": str(condition)[:200]},
            )
        name, over = spec.get("field"), _number(spec.get("over"))
        if not isinstance(name, str) or over is None or over <= 0:
            raise ToolFailure("approval condition `change_factor` needs `field` (a name) and `over` (> 0)")
        if name in proposed:
            why = change_factor_exceeded(before.get(name), proposed[name], over)
            if why is not None:
                reasons.append(f"`{name}` {why}")
    return reasons


class _Tools:
    def __init__(self, clients: Mapping[str, SalesforceApi]) -> None:
        self.clients = clients

    def client(self, org: str) -> SalesforceApi:
        client = self.clients.get(org)
        if client is None:
            raise ToolFailure(f"unknown salesforce org `{org[:64]}`", {"org": org[:64]})
        return client

    async def get_record(self, ctx: ToolContext, args: GetRecordInput) -> dict[str, Any]:
        client = self.client(args.org)
        try:
            record = await client.get_record(args.object, args.id, args.fields)
        except SalesforceError as exc:
            raise ToolFailure(str(exc), exc.facts()) from exc
        ctx.audit_detail.update(org=args.org, object=args.object, id=args.id)
        return {"org": args.org, "object": args.object, "id": args.id, "record": record}

    async def patch_record(self, ctx: ToolContext, args: PatchRecordInput) -> dict[str, Any]:
        client = self.client(args.org)
        names = list(args.fields)
        condition_fields = [
            c["change_factor"]["field"]
            for c in ctx.approval_conditions
            if isinstance(c.get("change_factor"), Mapping)
            and isinstance(c["change_factor"].get("field"), str)
        ]
        try:
            current = await client.get_record(args.object, args.id, names)
        except SalesforceError as exc:
            raise ToolFailure(str(exc), exc.facts()) from exc
        before = {name: current.get(name) for name in names}
        reasons = _approval_reasons(ctx, before, args.fields)
        if reasons and not ctx.approved:
            raise NeedsApproval(
                f"salesforce.patch_record of `{args.object}/{args.id}` needs approval: " + "; ".join(reasons),
                {
                    "org": args.org,
                    "object": args.object,
                    "id": args.id,
                    "before": before,
                    "proposed": dict(args.fields),
                    "conditions": condition_fields,
                },
            )
        return await _write(ctx, client, args.org, args.object, args.id, before, dict(args.fields))

    async def revert_patch(self, ctx: ToolContext, args: RevertPatchInput) -> dict[str, Any]:
        original = await _patch_facts(ctx, args.audit_id)
        org, sobject, record_id = original["org"], original["object"], original["id"]
        before, after = original["before"], original["after"]
        client = self.client(org)
        try:
            current = await client.get_record(sobject, record_id, list(after))
        except SalesforceError as exc:
            raise ToolFailure(str(exc), exc.facts()) from exc
        now = {name: current.get(name) for name in after}
        if now == before and before != after:
            # The record holds the patch's before-image again (an earlier revert, or the same values
            # put back by hand): there is nothing to write, so nothing to approve either.
            ctx.audit_detail.update(
                org=org,
                object=sobject,
                id=record_id,
                reverts=args.audit_id,
                already_reverted=True,
                applied=False,
            )
            return {
                "status": "already_reverted",
                "message": f"patch `{args.audit_id}` is already reverted: `{sobject}/{record_id}` holds its"
                " before-image; nothing written",
                "org": org,
                "object": sobject,
                "id": record_id,
                "now": now,
                "reverted": args.audit_id,
            }
        conflicts = {
            name: {"after_patch": value, "now": current.get(name)}
            for name, value in after.items()
            if current.get(name) != value
        }
        if conflicts:
            shown = ", ".join(f"`{name}`" for name in conflicts)
            raise ToolFailure(
                f"`{sobject}/{record_id}` changed since patch `{args.audit_id}` ({shown}); not reverted",
                {"conflicts": conflicts, "reverts": args.audit_id},
            )
        reasons = _approval_reasons(ctx, now, before)
        if reasons and not ctx.approved:
            raise NeedsApproval(
                f"salesforce.revert_patch of `{args.audit_id}` needs approval: " + "; ".join(reasons),
                {"org": org, "object": sobject, "id": record_id, "before": now, "proposed": before},
            )
        ctx.audit_detail["reverts"] = args.audit_id
        result = await _write(ctx, client, org, sobject, record_id, now, before)
        return {**result, "reverted": args.audit_id}


async def _write(
    ctx: ToolContext,
    client: SalesforceApi,
    org: str,
    sobject: str,
    record_id: str,
    before: dict[str, Any],
    values: dict[str, Any],
) -> dict[str, Any]:
    """PATCH ``values`` after recording the before-image and intended after-image; then read back."""
    ctx.audit_detail.update(org=org, object=sobject, id=record_id, before=before, after=values, applied=False)
    try:
        await client.patch_record(sobject, record_id, values)
    except SalesforceError as exc:
        raise ToolFailure(str(exc), exc.facts()) from exc
    ctx.audit_detail["applied"] = True
    try:
        # The after-image is what Salesforce stored (it normalises values, triggers may add changes).
        stored = await client.get_record(sobject, record_id, list(values))
        after = {name: stored.get(name) for name in values}
    except SalesforceError:
        after = values
    ctx.audit_detail["after"] = after
    return {
        "audit_id": ctx.call_id,
        "org": org,
        "object": sobject,
        "id": record_id,
        "before": before,
        "after": after,
    }


async def _patch_facts(ctx: ToolContext, audit_id: str) -> dict[str, Any]:
    """The before/after facts an earlier, applied ``patch_record`` call recorded.

    Raises:
        ToolFailure: no audit lookup, no such call, not a salesforce patch, another agent's patch,
            or the patch did not land.
    """
    lookup = ctx.policy_extra.get("audit_lookup")
    if not callable(lookup):
        raise ToolFailure("salesforce.revert_patch needs the audit log, which this gateway does not provide")
    found: Mapping[str, Any] | None = await lookup(audit_id)
    if found is None:
        raise ToolFailure(f"no salesforce patch with audit id `{audit_id}`")
    # The gateway's outcome record keeps the tool's facts under `facts`; `detail` or flat also work.
    nested = found.get("facts", found.get("detail"))
    detail: Mapping[str, Any] = nested if isinstance(nested, Mapping) else found
    tool = found.get("tool")
    if (tool is not None and tool != PATCH_TOOL) or found.get("status") not in (None, "ok"):
        raise ToolFailure(f"audit id `{audit_id}` is not a completed salesforce.patch_record call")
    # Deny by default: an agent undoes only its own patches (an admin can revert anything by hand).
    agent = found.get("agent")
    if agent is not None and agent != ctx.principal.agent:
        raise ToolFailure(f"audit id `{audit_id}` is another agent's patch; only that agent may revert it")
    facts = {key: detail.get(key) for key in ("org", "object", "id", "before", "after")}
    if (
        not all(isinstance(facts[key], str) for key in ("org", "object", "id"))
        or not isinstance(facts["before"], Mapping)
        or not isinstance(facts["after"], Mapping)
        or set(facts["before"]) != set(facts["after"])
        or detail.get("applied") is False
    ):
        raise ToolFailure(f"audit id `{audit_id}` holds no applied salesforce patch to revert")
    return {**facts, "before": dict(facts["before"]), "after": dict(facts["after"])}


def build_salesforce_toolset(
    orgs: Mapping[str, SalesforceOrgSettings],
    resolve_secret: Callable[[str], SecretValue],
    *,
    client_factory: ClientFactory | None = None,
) -> Toolset:
    """The ``salesforce`` toolset over the configured orgs.

    Args:
        orgs: org name → settings.
        resolve_secret: vault lookup by secret name, called when a token is requested.
        client_factory: builds each org's adapter (default ``SalesforceClient``); tests inject transports.
    """
    factory: ClientFactory = client_factory or (
        lambda name, settings, resolve: SalesforceClient(name, settings, resolve)
    )
    tools = _Tools({name: factory(name, settings, resolve_secret) for name, settings in orgs.items()})

    async def stop() -> None:
        for client in tools.clients.values():
            await client.aclose()

    definitions: list[BuiltinTool[Any]] = [
        BuiltinTool(
            "salesforce.get_record",
            "Read one Salesforce record (optionally only some fields) from a configured org.",
            GetRecordInput,
            tools.get_record,
            read_only=True,
            idempotent=True,
        ),
        BuiltinTool(
            PATCH_TOOL,
            "Update fields of one Salesforce record. The before- and after-images are audited and the "
            "returned audit_id can be passed to salesforce.revert_patch. Large changes may need a human's "
            "approval.",
            PatchRecordInput,
            tools.patch_record,
            destructive=True,
            idempotent=True,
        ),
        BuiltinTool(
            "salesforce.revert_patch",
            "Undo an earlier salesforce.patch_record by its audit_id, restoring the before-image; refused if "
            "the record changed since that patch.",
            RevertPatchInput,
            tools.revert_patch,
            destructive=True,
        ),
    ]
    return Toolset("salesforce", {tool.name: tool for tool in definitions}, start=None, stop=stop)
