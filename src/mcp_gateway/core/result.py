"""Step 9 of the governed skeleton: an act's answer checked, scrubbed for the record, held to the size
rule and validated, then its outcome recorded (durably, before the answer returns)."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types

from mcp_gateway.audit.record import canonical, digest
from mcp_gateway.core.exchange import Call, M, ResultRule, failed
from mcp_gateway.core.limits import LimitExceeded, LimitSettings, result_problem
from mcp_gateway.core.limits import truncate_result as truncate
from mcp_gateway.core.rounds import is_input_required
from mcp_gateway.core.state import SecretsView
from mcp_gateway.errors import UpstreamError
from mcp_gateway.telemetry import redacted


async def settle(
    call: Call,
    payload: dict[str, Any],
    status: str,
    facts: dict[str, Any],
    rule: ResultRule[M],
    outcome: Callable[..., Awaitable[None]],
    limits: LimitSettings,
    secrets: SecretsView,
) -> M | types.InputRequiredResult:
    where = call.exchange.where
    meta = payload.get("_meta")
    if isinstance(meta, dict) and types.SERVER_INFO_META_KEY in meta:
        # The upstream's name for itself: toward the agent the gateway is the server (and says so).
        payload = {**payload, "_meta": {k: v for k, v in meta.items() if k != types.SERVER_INFO_META_KEY}}
    max_depth = limits.max_result_depth
    known = _encoded(payload)
    # Each object or array writes one `{` or `[` (strings may add more): no more of them than
    # max_depth, no deeper nesting, and the walk is skipped.
    if known is None or known[0].count("{") + known[0].count("[") > max_depth:
        problem = result_problem(payload, max_depth=max_depth)
        if problem is not None:
            payload, status, known = failed(f"{where} answered {problem}"), "upstream_error", None
            if rule.failure == "raise":
                await outcome(status)
                raise UpstreamError(f"{where} answered {problem}")
    # Taken now, not at the start: a secret written meanwhile is known to this redactor.
    after = secrets.redactor()
    if known is not None and after.clean_json(known[0]):
        # Nothing to scrub (the common case): the answer as it came, its encoding already made.
        scrubbed, redactions, encoded = payload, 0, known[1]
    else:
        scrubbed, redactions = after.scrub_json(payload)
        # Its size is the compact JSON's: sorting keys changes no length.
        encoded = known[1] if known is not None and not redactions else canonical(scrubbed)
    extra: dict[str, Any] = {}
    if facts:
        # Before/after images, snapshot ids, run ids: scrubbed like the result they describe.
        extra["facts"], more = after.scrub_json(facts)
        redactions += more
    if redactions:
        redacted(redactions, call.exchange.method, call.shown)
    limit = limits.max_result_bytes
    truncated = False
    if len(encoded) > limit:
        if rule.oversize == "refuse" or is_input_required(payload):
            # A resource or prompt is one document: refused whole rather than cut somewhere inside.
            await outcome("too_large", result_bytes=len(encoded), redactions=redactions, **extra)
            size = len(encoded)
            raise LimitExceeded(
                f"the answer is {size} bytes, above the limit of {limit} (limits.max_result_bytes)"
            )
        scrubbed, truncated = truncate(scrubbed, limit, size=len(encoded))
    try:
        # An upstream's input_required round (2026-07-28), its state already sealed by the gateway.
        model = types.InputRequiredResult if is_input_required(scrubbed) else rule.model
        answer: M | types.InputRequiredResult = model.model_validate(scrubbed)
    except ValueError:
        status = "upstream_error"
        if rule.failure == "raise":
            await outcome(status, redactions=redactions, **extra)
            raise UpstreamError(f"{where} answered garbage") from None
        answer = rule.model.model_validate(failed(f"{where} answered garbage"))
    result_digest = digest(scrubbed) if truncated else hashlib.sha256(encoded).hexdigest()
    await outcome(
        status,
        result_digest=result_digest,
        redactions=redactions,
        redacted=redactions > 0,
        truncated=truncated,
        **extra,
    )
    return answer


def _encoded(payload: dict[str, Any]) -> tuple[str, bytes] | None:
    """The canonical JSON text and bytes of ``payload``; None when it is not JSON, holds a lone
    surrogate or is too deep to encode (then ``result_problem`` decides, with its exact message).

    Made anyway for the digest; the text lets the checks skip their Python walks (``settle``). A
    lone surrogate in any string or key is written as bytes that strict UTF-8 decoding refuses.
    """
    try:
        encoded = canonical(payload)
        return encoded.decode("utf-8"), encoded
    except (TypeError, ValueError, RecursionError):
        return None


# --- refusals and approvals -----------------------------------------------------------------
