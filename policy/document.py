"""The policy document itself (docs/policy-as-code.md), with no database: reading YAML safely,
validating against the published JSON Schema with errors that name their path, and the values a
document writes (durations in words, ends in UTC), so that two exports differ only where the
portal's policy does.

Reading, paths and digests are quality.as_code's (the document that this one embeds as `quality`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from governance import durations
from quality.as_code.document import (
    DocumentError,
    dataset_key,
    digest,
    load_yaml,
    no_nul,
    parse_key,
    path_of,
)

VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("policy-as-code.schema.json")
HEADER = "# The portal's policy as code (docs/policy-as-code.md): `manage.py policy plan`, then `apply`.\n"
SECTIONS = ("classifications", "roles", "standing_grants", "datasets", "quality")
_UNIT = {
    "day": dt.timedelta(days=1),
    "hour": dt.timedelta(hours=1),
    "minute": dt.timedelta(minutes=1),
    "second": dt.timedelta(seconds=1),
}
_PART = re.compile(r"(\d+) (day|hour|minute|second)s?")

__all__ = [
    "DocumentError",
    "dataset_key",
    "digest",
    "duration_of",
    "load_yaml",
    "openapi_schema",
    "parse_key",
    "schema",
    "to_yaml",
    "until_of",
    "until_text",
    "validate",
]


@cache
def schema() -> dict[str, Any]:
    """The published JSON Schema (docs/schemas/policy-as-code.schema.json is a copy of this file)."""
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


def openapi_schema() -> dict[str, Any]:
    """The schema as an OpenAPI 3.0 body: no `$schema`, `$defs` inlined, no type lists."""
    defs = schema()["$defs"]

    def inline(value: Any) -> Any:
        if isinstance(value, dict):
            if "$ref" in value:
                return inline(defs[value["$ref"].rsplit("/", 1)[1]])
            out = {k: inline(v) for k, v in value.items() if not k.startswith("$")}
            if isinstance(out.get("type"), list):
                types = [t for t in out["type"] if t != "null"]
                out["type"], out["nullable"] = types[0], True
            return out
        if isinstance(value, list):
            return [inline(v) for v in value]
        return value

    result: dict[str, Any] = inline(schema())
    return result


def validate(document: Any) -> dict[str, Any]:
    """The document if it matches the schema and holds no NUL character; else DocumentError with
    every problem by path (`classifications[1].max_duration: ...`)."""
    from jsonschema import Draft202012Validator

    problems: list[tuple[str, str]] = []
    errors = Draft202012Validator(schema()).iter_errors(document)
    for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
        parts = list(error.absolute_path)
        message = error.message
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [name for name in error.validator_value if name not in error.instance]
            parts, message = [*parts, missing[0]], "required."
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = set(error.schema.get("properties", {}))
            extra = sorted(str(name) for name in error.instance if name not in known)
            parts, message = [*parts, extra[0]], f"not a field here (known: {', '.join(sorted(known))})."
        elif error.validator == "oneOf" and isinstance(error.instance, dict):
            message = "name the grantee with `role` or `user` (one of them)."
        elif error.validator == "pattern" and parts and parts[-1] == "until":
            message = f"{error.instance!r} is not a date (2027-06-30) or a UTC time (2027-06-30T12:00:00Z)."
        elif error.validator == "pattern":
            message = f"{error.instance!r} is not a duration in words (`12 hours`, `30 days`)."
        problems.append((path_of(parts), message if len(message) <= 300 else message[:297] + "..."))
    if problems:
        raise DocumentError(problems)
    no_nul(document, "document")
    return dict(document)


def duration_of(text: str) -> dt.timedelta:
    """`1 day 6 hours` as a timedelta (the schema's pattern was checked: every part is one)."""
    return sum((int(n) * _UNIT[unit] for n, unit in _PART.findall(text)), dt.timedelta(0))


def duration_text(value: dt.timedelta) -> str:
    return durations.words(value)


def until_of(text: str) -> dt.datetime:
    """2027-06-30 (midnight UTC) or 2027-06-30T12:00[:00]Z as an aware UTC datetime; ValueError if
    it is no date (2027-02-30)."""
    if "T" not in text:
        return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(0), tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


def until_text(value: dt.datetime) -> str:
    """What an export writes: the date alone at midnight UTC, else the time to the second."""
    utc = value.astimezone(dt.UTC).replace(microsecond=0)
    return utc.date().isoformat() if utc.time() == dt.time(0) else utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def to_yaml(document: Any) -> str:
    """YAML in the document's own key order, block style, with a header comment."""
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
    return HEADER + text if isinstance(document, dict) and "version" in document else text
