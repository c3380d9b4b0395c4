"""Tool globs for audit search: parsed here, then written in the pattern language of each store.

A glob is ``*`` (any run), ``?`` (one character) and ``[abc]``/``[a-z]``/``[!abc]`` (classes), as in a
shell; every other character matches only itself. It is parsed into literal runs, wildcards and
classes, and each literal character is escaped for the language it lands in: SQLite ``GLOB`` (a
metacharacter inside a one-character class), PostgreSQL ``LIKE ... ESCAPE '\\'`` (``%``, ``_`` and
``\\`` escaped) or, with classes, a PostgreSQL regular expression (every non-alphanumeric character
escaped). The pattern is always a bound parameter: a glob is never SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from mcp_gateway.errors import AuditError

__all__ = ["MAX_PATTERN", "AuditSearchError", "Dialect", "parse_glob", "tool_condition"]

MAX_PATTERN = 256
"""The longest tool glob or free text accepted (a console field, not a document)."""

Dialect = Literal["sqlite", "postgres"]


class AuditSearchError(AuditError):
    """A search that cannot be run as given (bad glob, page size, time range); the message says which."""


@dataclass(frozen=True, slots=True)
class _Class:
    """A ``[...]`` of a glob: ``members`` as written (ranges ``a-z`` kept), ``negated`` for ``[!...]``."""

    members: str
    negated: bool


GlobPart = str | _Class
"""A literal run of characters, ``*``/``?`` as the one-character strings ``"\\x00*"``/``"\\x00?"``,
or a character class."""
_STAR, _ONE = "\x00*", "\x00?"


def parse_glob(glob: str) -> list[GlobPart]:
    """Split a tool glob into literal runs, wildcards and classes.

    Raises:
        AuditSearchError: a ``[`` is never closed, a class is empty, or the glob is too long.
    """
    if len(glob) > MAX_PATTERN:
        raise AuditSearchError(f"tool glob is longer than {MAX_PATTERN} characters")
    parts: list[GlobPart] = []
    literal: list[str] = []
    i = 0
    while i < len(glob):
        char = glob[i]
        if char in "*?[":
            if literal:
                parts.append("".join(literal))
                literal = []
        if char == "*":
            if not parts or parts[-1] != _STAR:  # `**` is `*`
                parts.append(_STAR)
        elif char == "?":
            parts.append(_ONE)
        elif char == "[":
            j = i + 1
            negated = j < len(glob) and glob[j] == "!"
            j += negated
            start = j
            if j < len(glob) and glob[j] == "]":  # `[]...]`: a leading `]` is a member
                j += 1
            while j < len(glob) and glob[j] != "]":
                j += 1
            if j >= len(glob):
                raise AuditSearchError(f"invalid tool glob `{glob}`: a `[` is not closed")
            members = glob[start:j]
            if not members:
                raise AuditSearchError(f"invalid tool glob `{glob}`: empty `[]`")
            _check_class(glob, members, negated)
            parts.append(_Class(members, negated))
            i = j
        elif char == "\x00":
            raise AuditSearchError(f"invalid tool glob `{glob}`: a NUL character")
        else:
            literal.append(char)
        i += 1
    if literal:
        parts.append("".join(literal))
    return parts


def _check_class(glob: str, members: str, negated: bool) -> None:
    if "\x00" in members:
        raise AuditSearchError(f"invalid tool glob `{glob}`: a NUL character")
    if not negated and members.startswith("^"):
        # `[^x]` negates in SQLite but not in a shell glob: refuse the ambiguity.
        raise AuditSearchError(f"invalid tool glob `{glob}`: write `[!...]` to negate, or put `^` later")
    for k in range(len(members) - 2):
        if members[k + 1] == "-" and members[k] > members[k + 2]:
            raise AuditSearchError(f"invalid tool glob `{glob}`: range `{members[k : k + 3]}` runs backwards")


def _glob_for_sqlite(parts: list[GlobPart]) -> str:
    # SQLite's GLOB has no escape character: a metacharacter is matched literally inside a class.
    out: list[str] = []
    for part in parts:
        if part == _STAR:
            out.append("*")
        elif part == _ONE:
            out.append("?")
        elif isinstance(part, _Class):
            out.append(f"[{'^' if part.negated else ''}{part.members}]")
        else:
            out.append("".join(f"[{c}]" if c in "*?[" else c for c in part))
    return "".join(out)


def _like_for_postgres(parts: list[GlobPart]) -> str:
    out: list[str] = []
    for part in parts:
        if part == _STAR:
            out.append("%")
        elif part == _ONE:
            out.append("_")
        else:
            assert isinstance(part, str)  # noqa: S101 - callers route classes to the regex
            out.append(re.sub(r"([\\%_])", r"\\\1", part))
    return "".join(out)


def _regex_member(char: str) -> str:
    # Inside a PostgreSQL bracket expression: letters and digits as they are, anything else escaped.
    return char if char.isalnum() else "\\" + char


def _regex_for_postgres(parts: list[GlobPart]) -> str:
    out = ["^"]
    for part in parts:
        if part == _STAR:
            out.append(".*")
        elif part == _ONE:
            out.append(".")
        elif isinstance(part, _Class):
            members, k = [], 0
            body = part.members
            while k < len(body):
                if k + 2 < len(body) and body[k + 1] == "-":
                    members.append(f"{_regex_member(body[k])}-{_regex_member(body[k + 2])}")
                    k += 3
                else:
                    members.append(_regex_member(body[k]))
                    k += 1
            out.append(f"[{'^' if part.negated else ''}{''.join(members)}]")
        else:
            # `\` before any non-alphanumeric character is that character, in PostgreSQL's AREs too.
            out.append("".join(c if c.isalnum() else "\\" + c for c in part))
    out.append("$")
    return "".join(out)


def tool_condition(glob: str, dialect: Dialect) -> tuple[str, str]:
    """The condition on ``tool`` (with one ``%s``) and its parameter. Raises ``AuditSearchError``."""
    parts = parse_glob(glob)
    if all(isinstance(p, str) and p not in (_STAR, _ONE) for p in parts):
        return "tool = %s", glob
    if dialect == "sqlite":
        # `+tool`: not through the tool index; the seq window bounds the work (``run_search``).
        return "+tool GLOB %s", _glob_for_sqlite(parts)
    if any(isinstance(p, _Class) for p in parts):
        return "tool ~ %s", _regex_for_postgres(parts)
    return "tool LIKE %s ESCAPE '\\'", _like_for_postgres(parts)
