"""The checks-as-code document itself (docs/quality.md#checks-as-code), with no database: reading YAML
safely, validating against the published JSON Schema with errors that name their path, dataset keys,
and the fixed shape an export writes (so that a diff of two exports shows only what changed)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from governance.errors import InvalidInput

VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("quality-checks.schema.json")
# A check's fields in the order an export writes them, and the defaults it leaves out.
CHECK_KEYS = ("name", "kind", "column", "params", "threshold", "enabled", "description")
DEFAULTS: dict[str, Any] = {"column": "", "params": {}, "threshold": 0.0, "enabled": True, "description": ""}
MAX_DEPTH = 32  # no document nests half as deep (the API's JSON limit, governance/api/parsers.py)
HEADER = "# Data quality checks as code (docs/quality.md#checks-as-code): plan, then apply.\n"


class DocumentError(InvalidInput):
    """The document is not one the portal applies: every problem, each with its path
    (`datasets[0].checks[2].threshold: ...`); the first is the message and the field."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        path, message = problems[0]
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        super().__init__(f"{path}: {message}{more}", field=path, errors=[f"{p}: {m}" for p, m in problems])
        self.problems = problems


# --- reading -------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader without timestamps: `min: 2024-01-01` stays the text a range compares,
    as it would in JSON (a date object would not be JSON)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(text: str | bytes) -> Any:
    """A YAML (or JSON: YAML reads it) text as plain JSON values. Refused, as a DocumentError at
    `document`: what does not parse, anchors and aliases (a few lines of them expand to gigabytes),
    nesting deeper than MAX_DEPTH (checked on the parser's events, before anything recursive runs),
    and values JSON does not have (binary, sets, non-text keys)."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        depth = 0
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise DocumentError([("document", "anchors and aliases (& and *) are not allowed.")])
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise DocumentError([("document", f"nested deeper than {MAX_DEPTH} levels.")])
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        value = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader (less: no timestamps)
    except UnicodeDecodeError:
        raise DocumentError([("document", "not UTF-8 text.")]) from None
    except yaml.YAMLError as exc:
        raise DocumentError([("document", f"not YAML: {' '.join(str(exc).split())[:300]}")]) from None
    except RecursionError:
        raise DocumentError([("document", f"nested deeper than {MAX_DEPTH} levels.")]) from None
    _ensure_json(value, "document")
    return value


def _ensure_json(value: Any, path: str) -> None:
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if math.isnan(value):
            raise DocumentError([(path, "not a number (.nan).")])
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _ensure_json(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise DocumentError([(path, f"the key {key!r} is not text.")])
            _ensure_json(item, key if path == "document" else f"{path}.{key}")
        return
    raise DocumentError([(path, f"a {type(value).__name__} is not a JSON value.")])


# --- validating -----------------------------------------------------------------------------------------


@cache
def schema() -> dict[str, Any]:
    """The published JSON Schema (docs/schemas/quality-checks.schema.json is a copy of this file)."""
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


def openapi_schema() -> dict[str, Any]:
    """The schema as an OpenAPI 3.0 request body (no `$schema`): what the API's schema shows."""
    return {key: value for key, value in schema().items() if not key.startswith("$")}


def path_of(parts: Iterable[Any]) -> str:
    """`datasets[0].checks[2].threshold` from ["datasets", 0, "checks", 2, "threshold"]."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "document"


def validate(document: Any) -> dict[str, Any]:
    """The document if it matches the schema and holds no NUL character; else DocumentError with
    every problem by path (a missing field is named at its own path)."""
    from jsonschema import Draft202012Validator

    problems: list[tuple[str, str]] = []
    for error in sorted(Draft202012Validator(schema()).iter_errors(document), key=lambda e: [str(p) for p in e.path]):
        parts = list(error.absolute_path)
        message = error.message
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [name for name in error.validator_value if name not in error.instance]
            parts, message = [*parts, missing[0]], "required."
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = set(error.schema.get("properties", {}))
            extra = sorted(str(name) for name in error.instance if name not in known)
            parts, message = [*parts, extra[0]], f"not a field here (known: {', '.join(sorted(known))})."
        problems.append((path_of(parts), message if len(message) <= 300 else message[:297] + "..."))
    if problems:
        raise DocumentError(problems)
    no_nul(document, "document")
    return dict(document)


def no_nul(value: Any, path: str) -> None:
    """PostgreSQL text cannot hold NUL: refused here, by path, rather than by the database."""
    if isinstance(value, str) and "\x00" in value:
        raise DocumentError([(path, "NUL characters are not allowed.")])
    if isinstance(value, list):
        for index, item in enumerate(value):
            no_nul(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            no_nul(key, path)
            no_nul(item, key if path == "document" else f"{path}.{key}")


# --- dataset keys ---------------------------------------------------------------------------------------


def _quote(ident: str) -> str:
    simple = ident.islower() and ident.replace("_", "").isalnum() and not ident[:1].isdigit()
    return ident if simple else '"' + ident.replace('"', '""') + '"'


def dataset_key(source: str, schema_name: str, name: str) -> str:
    """`<source>:<schema>.<name>`, names quoted as PostgreSQL prints them (Dataset.qualified_name)."""
    return f"{source}:{_quote(schema_name)}.{_quote(name)}"


def parse_key(key: str) -> tuple[str, str, str]:
    """(source, schema, name) of a dataset key; a name may be double-quoted ("" is a quote inside),
    unquoted names are taken as written. ValueError when it is not two names after the source."""
    source, colon, rest = key.partition(":")
    if not colon or not source:
        raise ValueError("a dataset is <source>:<schema>.<name>.")
    names: list[str] = []
    at = 0
    while True:
        if rest[at : at + 1] == '"':
            text, at = _quoted(rest, at + 1)
        else:
            dot = rest.find(".", at)
            end = len(rest) if dot < 0 else dot
            text, at = rest[at:end], end
        if not text:
            raise ValueError("a dataset is <source>:<schema>.<name> (an empty name).")
        names.append(text)
        if at == len(rest):
            break
        if rest[at] != "." or len(names) == 2:
            raise ValueError('a dataset is <source>:<schema>.<name> (quote a name holding a dot: "a.b").')
        at += 1
    if len(names) != 2:
        raise ValueError("a dataset is <source>:<schema>.<name>.")
    return source, names[0], names[1]


def _quoted(text: str, at: int) -> tuple[str, int]:
    parts: list[str] = []
    while True:
        end = text.find('"', at)
        if end < 0:
            raise ValueError("a quoted name is not closed.")
        if text[end + 1 : end + 2] == '"':
            parts.append(text[at : end + 1])
            at = end + 2
            continue
        parts.append(text[at:end])
        return "".join(parts), end + 1


# --- writing --------------------------------------------------------------------------------------------


def _number(value: Any) -> Any:
    """3600 rather than 3600.0: what a person would write, and equal to what is stored."""
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else value


def check_entry(fields: dict[str, Any]) -> dict[str, Any]:
    """A check as the document writes it: fixed key order, defaults and empty parameters left out."""
    entry: dict[str, Any] = {}
    for key in CHECK_KEYS:
        value = fields.get(key, DEFAULTS.get(key))
        if key == "params":
            value = {k: v for k, v in sorted((value or {}).items()) if v is not None}
        if key in DEFAULTS and value == DEFAULTS[key]:
            continue
        entry[key] = _number(value) if key == "threshold" else value
    return entry


def watch_entry(mode: str, key_column: str) -> dict[str, Any]:
    return {"mode": mode, "key_column": key_column} if key_column else {"mode": mode}


def to_yaml(document: Any) -> str:
    """YAML in the document's own key order (not sorted), block style, with a header comment."""
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
    return HEADER + text if isinstance(document, dict) and "datasets" in document else text


def digest(document: dict[str, Any]) -> str:
    """What identifies a document's content (its audit events carry it): sha256 of canonical JSON."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
