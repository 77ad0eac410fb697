"""What a cell or a key of S3 data is: a value (and which kind of value), or a name for a column.

An S3 object carries no catalog: the column names discovery records come from the data itself (a
CSV's first row, JSON keys). Column names are catalog metadata, shown to everyone who can see the
dataset and written into its history and audit events, so a value must never become one: the
first row of a headerless export (Glue, Firehose, Redshift UNLOAD) holds emails and identifiers,
and a JSON object can be keyed by data (`{"alice@example.org": {...}}`). `looks_like_value` is the
test both readers apply before a text becomes a name.

The kinds of values (`text_kind`, `json_kind`) type the sampled fields. Digit runs of nine digits
or more, and any with a leading zero, are identifiers rather than quantities (BSN 9 digits, NHS 10,
CPF, PESEL and the German IdNr 11, US phone numbers written bare): they are typed as text, so that
the value detectors read them, as they read a `text` column of a database.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

# Quantities: up to eight digits without a leading zero; longer runs are identifiers (module doc).
_INT_RE = re.compile(r"^-?(?:0|[1-9]\d{0,7})$")
_FLOAT_RE = re.compile(r"^-?(?:0|[1-9]\d*)\.\d+(?:[eE][-+]?\d+)?$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?$")
IDENTIFIER_DIGITS = 9  # a bare integer this long or longer is an identifier (module doc)

# A column name as people write them: letters first, then letters, digits and a few separators.
_NAME_RE = re.compile(r"^[^\W\d][\w .\-/()#&%'\"?;:,+*\[\]]*$")
_MAX_NAME = 64
_DIGITS_RE = re.compile(r"\d")
_HEX_ID_RE = re.compile(r"^[0-9a-fA-F-]{16,}$")  # uuids, hashes
_LONG_DIGIT_RUN_RE = re.compile(r"\d{5,}")


def text_kind(value: str) -> str:
    """The kind of one value read as text: number, boolean, date, timestamp or text."""
    if _INT_RE.match(value) or _FLOAT_RE.match(value):
        return "number"
    if value.lower() in {"true", "false"}:
        return "boolean"
    if _DATE_RE.match(value):
        return "date"
    if _TIMESTAMP_RE.match(value):
        return "timestamp"
    return "text"


def json_kind(value: Any) -> str:
    """The kind of one JSON value; integers of identifier length are text (module doc)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "text" if len(str(abs(value))) >= IDENTIFIER_DIGITS else "number"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "json"
    return text_kind(str(value))


def identifier_digits(values: list[str | None]) -> bool:
    """Whether most non-empty values are bare integers of identifier length (Parquet int columns
    holding national identifiers or phone numbers): then the detectors read them as text."""
    present = [v.strip().lstrip("-") for v in values if v is not None and v.strip()]
    if not present:
        return False
    long = sum(1 for v in present if v.isdigit() and len(v) >= IDENTIFIER_DIGITS)
    return long * 2 > len(present)


@lru_cache(maxsize=4096)  # the same keys recur on every row of a JSON object
def looks_like_value(text: str) -> bool:
    """Whether `text` reads as data rather than a column's name (never let it become one):

    - a value a PII detector accepts (email, phone, SSN, national identifier, card, IBAN, IP
      address, a person's name);
    - a number, boolean, date or timestamp, or a digit run of five or more (ids, zip codes with
      their extension, order numbers), or a hex string of 16 or more (uuids, hashes);
    - longer than 64 characters, or not shaped like a name (starts with a digit or a symbol).
    """
    value = text.strip()
    if not value:
        return False
    if len(value) > _MAX_NAME or not _NAME_RE.match(value):
        return True
    if text_kind(value) != "text" or _LONG_DIGIT_RUN_RE.search(value) or _HEX_ID_RE.match(value):
        return True
    if len(_DIGITS_RE.findall(value)) * 2 > len(value):
        return True
    from . import pii  # here, not at import: the package's tag names come from the Django models

    return any(
        test(value)
        for test in (
            pii.is_email,
            pii.is_phone,
            pii.is_ssn,
            pii.is_national_id,
            pii.is_card_number,
            pii.iban_valid,
            pii.is_ip_address,
            pii.is_person_name,
        )
    )


def is_header(first: list[str], following: list[list[str]], sniffed: bool | None) -> bool:
    """Whether a CSV's first row names its columns.

    Never when one of its cells looks like a value (`looks_like_value`), or when a cell recurs as a
    value of its column in the rows that follow (`Berlin` over a column of cities). Otherwise yes
    when `csv.Sniffer().has_header` says so (`sniffed`: None when it could not tell), or when every
    cell is shaped like a name: the sniffer only votes on columns whose values are typed or of one
    length, so a real header over free-text columns gets no vote.
    """
    cells = [c.strip() for c in first]
    if not any(cells) or any(looks_like_value(c) for c in cells):
        return False
    for i, cell in enumerate(cells):
        if cell and any(i < len(row) and row[i].strip() == cell for row in following):
            return False
    return bool(sniffed) or all(not c or _NAME_RE.match(c) for c in cells)
