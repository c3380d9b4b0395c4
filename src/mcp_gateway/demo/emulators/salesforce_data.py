"""The emulator's sObject schemas, seed data and field checks (see ``emulator.py``).

A TEST/DEMO DOUBLE, not Salesforce. It models three standard objects with a subset of their fields,
Salesforce's type coercion for JSON input, and the error codes Salesforce documents for bad input.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Literal

from mcp_gateway.connectors.salesforce.ids import to_id18

FieldType = Literal[
    "id",
    "string",
    "textarea",
    "currency",
    "double",
    "int",
    "boolean",
    "date",
    "datetime",
    "picklist",
    "reference",
]


@dataclass(frozen=True)
class FieldSpec:
    """One field: type, whether it can be written, whether it can be null, and type details."""

    type: FieldType
    updateable: bool = True
    nillable: bool = True
    length: int = 255
    picklist: tuple[str, ...] = ()
    reference_prefix: str = ""


@dataclass(frozen=True)
class ObjectSpec:
    """One sObject type: its record id key prefix and its fields."""

    key_prefix: str
    fields: dict[str, FieldSpec]


_SYSTEM = {
    "Id": FieldSpec("id", updateable=False, nillable=False),
    "CreatedDate": FieldSpec("datetime", updateable=False, nillable=False),
    "LastModifiedDate": FieldSpec("datetime", updateable=False, nillable=False),
    "SystemModstamp": FieldSpec("datetime", updateable=False, nillable=False),
    "IsDeleted": FieldSpec("boolean", updateable=False, nillable=False),
}
STAGES = (
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
)

SCHEMAS: dict[str, ObjectSpec] = {
    "Account": ObjectSpec(
        "001",
        {
            **_SYSTEM,
            "Name": FieldSpec("string", nillable=False, length=255),
            "Industry": FieldSpec("picklist", length=255),
            "AnnualRevenue": FieldSpec("currency"),
            "NumberOfEmployees": FieldSpec("int"),
            "Phone": FieldSpec("string", length=40),
            "Website": FieldSpec("string", length=255),
        },
    ),
    "Contact": ObjectSpec(
        "003",
        {
            **_SYSTEM,
            "FirstName": FieldSpec("string", length=40),
            "LastName": FieldSpec("string", nillable=False, length=80),
            "Email": FieldSpec("string", length=80),
            "Title": FieldSpec("string", length=128),
            "AccountId": FieldSpec("reference", reference_prefix="001"),
            "HasOptedOutOfEmail": FieldSpec("boolean", nillable=False),
        },
    ),
    "Opportunity": ObjectSpec(
        "006",
        {
            **_SYSTEM,
            "Name": FieldSpec("string", nillable=False, length=120),
            "AccountId": FieldSpec("reference", reference_prefix="001"),
            "Amount": FieldSpec("currency"),
            "StageName": FieldSpec("picklist", nillable=False, picklist=STAGES),
            "CloseDate": FieldSpec("date", nillable=False),
            "Probability": FieldSpec("double"),
            "Description": FieldSpec("textarea", length=32000),
            "IsClosed": FieldSpec("boolean", updateable=False, nillable=False),
        },
    ),
}

ACME_ID = to_id18("001000000000001")
ACME_OPPORTUNITY_ID = to_id18("006000000000001")
GLOBEX_OPPORTUNITY_ID = to_id18("006000000000002")
INITECH_OPPORTUNITY_ID = to_id18("006000000000003")
"""The demo's fat-finger: a $1m deal entered as $10m (the seed's story; the same deal as the lake's)."""
ACME_CONTACT_ID = to_id18("003000000000001")
_SEED_TIME = "2025-01-15T09:30:00.000+0000"


def seed_records() -> dict[str, dict[str, dict[str, Any]]]:
    """Fresh seed data: object → id → record. The Acme opportunity's Amount is 1,000,000; the Initech
    one's is 10,000,000, fat-fingered for 1,000,000 (the demo patch corrects it)."""
    system = {
        "CreatedDate": _SEED_TIME,
        "LastModifiedDate": _SEED_TIME,
        "SystemModstamp": _SEED_TIME,
        "IsDeleted": False,
    }
    return {
        "Account": {
            ACME_ID: {
                "Id": ACME_ID,
                **system,
                "Name": "Acme Corp",
                "Industry": "Manufacturing",
                "AnnualRevenue": 25000000.0,
                "NumberOfEmployees": 1200,
                "Phone": "+1 415 555 0100",
                "Website": "https://acme.example",
            },
        },
        "Contact": {
            ACME_CONTACT_ID: {
                "Id": ACME_CONTACT_ID,
                **system,
                "FirstName": "Ada",
                "LastName": "Lovelace",
                "Email": "ada@acme.example",
                "Title": "CFO",
                "AccountId": ACME_ID,
                "HasOptedOutOfEmail": False,
            },
        },
        "Opportunity": {
            ACME_OPPORTUNITY_ID: {
                "Id": ACME_OPPORTUNITY_ID,
                **system,
                "Name": "Acme - Platform renewal",
                "AccountId": ACME_ID,
                "Amount": 1000000.0,
                "StageName": "Negotiation/Review",
                "CloseDate": "2025-06-30",
                "Probability": 80.0,
                "Description": None,
                "IsClosed": False,
            },
            GLOBEX_OPPORTUNITY_ID: {
                "Id": GLOBEX_OPPORTUNITY_ID,
                **system,
                "Name": "Globex - Pilot",
                "AccountId": None,
                "Amount": 50000.0,
                "StageName": "Prospecting",
                "CloseDate": "2025-09-30",
                "Probability": 10.0,
                "Description": "pilot",
                "IsClosed": False,
            },
            INITECH_OPPORTUNITY_ID: {
                "Id": INITECH_OPPORTUNITY_ID,
                **system,
                "Name": "Initech - Platform deal",
                "AccountId": None,
                "Amount": 10000000.0,
                "StageName": "Closed Won",
                "CloseDate": "2025-01-10",
                "Probability": 100.0,
                "Description": "entered as 10,000,000; the signed order form says 1,000,000",
                "IsClosed": True,
            },
        },
    }


class FieldError(Exception):
    """A field value Salesforce would refuse: carries the documented errorCode, message and fields."""

    def __init__(self, code: str, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?(Z|[+-]\d{2}:?\d{2})")


def _parser_error(kind: str, value: Any) -> FieldError:
    token = {str: "VALUE_STRING", bool: "VALUE_TRUE" if value else "VALUE_FALSE"}.get(
        type(value), "VALUE_NUMBER"
    )
    return FieldError(
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {kind} from {token} value {value} or request may be missing a "
        "required field at [line:1, column:1]",
    )


def coerce(sobject: str, name: str, spec: FieldSpec, value: Any) -> Any:
    """The stored form of ``value`` for field ``name``, or FieldError as Salesforce would answer."""
    if value is None:
        if not spec.nillable or (spec.type == "boolean"):
            raise FieldError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{name}]", (name,))
        return None
    if spec.type in ("currency", "double", "int"):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise _parser_error(spec.type, value)
        try:
            number = float(value)
        except ValueError:
            raise _parser_error(spec.type, value) from None
        if spec.type == "int":
            if number != int(number):
                raise _parser_error("int", value)
            return int(number)
        return number
    if spec.type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _parser_error("boolean", value)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _parser_error(spec.type, value)
    text = str(value)
    if spec.type == "date":
        if not _DATE.fullmatch(text) or not _valid_date(text):
            raise _parser_error("date", value)
        return text
    if spec.type == "datetime":
        if not _DATETIME.fullmatch(text):
            raise _parser_error("datetime", value)
        return text
    if spec.type == "reference":
        if not (len(text) in (15, 18) and text.isalnum() and text.startswith(spec.reference_prefix)):
            raise FieldError("MALFORMED_ID", f"{name}: id value of incorrect type: {text}", (name,))
        return to_id18(text)
    if spec.type == "picklist" and spec.picklist and text not in spec.picklist:
        raise FieldError(
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"{name}: bad value for restricted picklist field: {text}",
            (name,),
        )
    if len(text) > spec.length:
        raise FieldError(
            "STRING_TOO_LONG",
            f"{name}: data value too large: {text[:40]} (max length={spec.length})",
            (name,),
        )
    return text


def _valid_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def validation_rules(sobject: str, record: dict[str, Any]) -> FieldError | None:
    """The org's custom validation rules, run on the record as it would be after the update."""
    if sobject == "Opportunity" and isinstance(record.get("Amount"), float) and record["Amount"] < 0:
        return FieldError("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Amount must not be negative", ("Amount",))
    return None
