"""What a refused ``gateway.yaml`` says: the key and the problem, never a value written in the file
(a token pasted into the wrong key must not be printed back). Used by ``config.load_settings`` and
``mcp-gateway config check``.
"""

from __future__ import annotations

import re

from pydantic_core import ErrorDetails

SHOWN_PROBLEMS = 5
"""How many problems a settings error lists (then ``and N more``)."""
_KEY_SHOWN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def location(loc: tuple[int | str, ...]) -> str:
    """A validation error's location; a key that is no name is not echoed (``-c /etc/shadow`` would
    print its lines as unknown keys)."""
    return ".".join(str(p) if isinstance(p, int) or _KEY_SHOWN.fullmatch(p) else "<key>" for p in loc)


def scalar_values(node: object) -> set[str]:
    """Every string or number value (not key) in parsed YAML: text an error message must not repeat."""
    if isinstance(node, dict):
        return set().union(*(scalar_values(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(scalar_values(v) for v in node))
    return {str(node)} if isinstance(node, str | int | float) and not isinstance(node, bool) else set()


def error_text(err: ErrorDetails, values: set[str]) -> str:
    """A validation error's message that never repeats a value written in the file.

    ``hide_input_in_errors`` keeps most inputs out of pydantic's messages, but not all: a union's
    discriminator tag is quoted in ``union_tag_invalid`` (a token pasted into ``transport:`` would be
    printed), so that message is rebuilt, and any other library message repeating a value of the
    file is replaced by its error type. The gateway's own validators (``value_error``) choose what
    they name.
    """
    if err["type"] == "union_tag_invalid":
        return f"must be one of {(err.get('ctx') or {}).get('expected_tags', '')}"
    text = err["msg"]
    if err["type"] != "value_error" and any(value in text for value in values if len(value) >= 4):
        return f"invalid value ({err['type']})"
    return text
