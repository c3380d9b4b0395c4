"""Salesforce names and record ids: syntax checks done before any URL is built.

Record ids are 15 case-sensitive alphanumerics, or those 15 plus a 3-character suffix that encodes
the case of the first 15 (so an 18-character id survives case-insensitive systems). The suffix is
checked here, which catches most typos and truncations before they reach Salesforce.
"""

from __future__ import annotations

import re

_ID15 = re.compile(r"[A-Za-z0-9]{15}")
_ID18 = re.compile(r"[A-Za-z0-9]{15}[A-Z0-5]{3}", re.IGNORECASE)
# API names: a letter, then letters, digits and single underscores; a namespace prefix and a custom
# suffix add up to two `__` separators (`ns__Thing__c`).
# Only [A-Za-z0-9_] can pass, so a name can never add a path segment, a query or an escape to a URL.
_NAME = re.compile(r"[A-Za-z](?:[A-Za-z0-9]|_(?!_))*(?:__[A-Za-z](?:[A-Za-z0-9]|_(?!_))*){0,2}")
_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
MAX_NAME_LENGTH = 80


def id_suffix(id15: str) -> str:
    """The 3-character case-encoding suffix Salesforce appends to a 15-character id."""
    suffix = ""
    for start in (0, 5, 10):
        bits = 0
        for offset, char in enumerate(id15[start : start + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << offset
        suffix += _SUFFIX_ALPHABET[bits]
    return suffix


def to_id18(id15: str) -> str:
    """The 18-character form of a 15-character id (an 18-character id is returned as is)."""
    return id15 if len(id15) == 18 else id15 + id_suffix(id15)


def is_record_id(value: str) -> bool:
    """True when ``value`` is a well-formed 15- or 18-character record id (suffix checked)."""
    if _ID15.fullmatch(value):
        return True
    if _ID18.fullmatch(value):
        return value[15:].upper() == id_suffix(value[:15])
    return False


def is_api_name(value: str) -> bool:
    """True when ``value`` is a syntactically valid sObject or field API name."""
    return len(value) <= MAX_NAME_LENGTH and _NAME.fullmatch(value) is not None
