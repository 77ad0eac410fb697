"""PATCH (RFC 7644 §3.5.2) applied to a resource's document, with what Entra ID and Okta send:
op names in any case ("Replace"), attribute names in any case, "True"/"False" strings for booleans,
value filters in paths (members[value eq "id"], emails[type eq "work"].value), replace or add without
a path carrying a dict of attributes (keys may be dotted, "name.givenName", or URN-prefixed), and
remove of members listed in `value`. Attributes this server does not store (title, phoneNumbers, the
enterprise extension...) are ignored rather than refused, so that a provider's default mapping does
not fail the whole push. Pure: no Django; the result is validated and written by the services.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from .errors import ScimError, bad
from .schema import BOOLEAN, CORE_SCHEMA, MULTI, NAMES, PATCH_SCHEMA, REQUIRED

_PATH = re.compile(r"^([A-Za-z$][\w$-]*)(?:\[(.+)\])?(?:\.([A-Za-z$][\w$-]*))?$")
_FILTER = re.compile(r'^\s*([A-Za-z$][\w$.-]*)\s+eq\s+("(?:[^"\\]|\\.)*"|true|false|null|-?\d+(?:\.\d+)?)\s*$', re.I)
READ_ONLY = {"id", "meta", "schemas", "groups"}
Path = tuple[str, tuple[str, Any] | None, str | None]


def key(mapping: dict[str, Any], name: str) -> Any:
    """A member of a JSON object by name, whatever its case ("Operations", "operations")."""
    for k, v in mapping.items():
        if k.lower() == name.lower():
            return v
    return None


def as_bool(value: Any) -> Any:
    """Entra ID sends "False" and "True" for booleans; anything else is left for validation."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


def canonical_value(kind: str, attr: str, value: Any) -> Any:
    """Spell the sub-attributes of a complex value as this server does, and coerce booleans."""
    if isinstance(value, list):
        return [canonical_value(kind, attr, v) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            name = NAMES[kind].get(f"{attr.lower()}.{k.lower()}")
            if name is not None:
                out[name] = as_bool(v) if f"{attr.lower()}.{name.lower()}" in BOOLEAN else v
        return out
    return as_bool(value) if attr.lower() in BOOLEAN else value


def parse_path(kind: str, raw: Any) -> Path | None:
    """(attribute, filter, sub-attribute) in this server's spelling; None for an attribute it does
    not store. A path that cannot be parsed is a 400 invalidPath; a bad filter, invalidFilter."""
    if not isinstance(raw, str) or not raw.strip():
        raise bad("path must be a non-empty string.", "invalidPath")
    path = raw.strip()
    if path.lower().startswith("urn:"):
        core = CORE_SCHEMA[kind].lower() + ":"
        if not path.lower().startswith(core):
            return None  # an extension (enterprise User...) this server does not store
        path = path[len(core) :]
    match = _PATH.match(path)
    if not match:
        raise bad(f"Cannot parse the path {raw!r}.", "invalidPath")
    attr_raw, filter_raw, sub_raw = match.groups()
    attr = NAMES[kind].get(attr_raw.lower())
    if attr is None or (sub_raw and f"{attr.lower()}.{sub_raw.lower()}" not in NAMES[kind]):
        return None
    if attr in READ_ONLY:
        raise bad(f"{attr} is read-only.", "mutability")
    sub = NAMES[kind][f"{attr.lower()}.{sub_raw.lower()}"] if sub_raw else None
    flt = None
    if filter_raw is not None:
        if attr not in MULTI:
            raise bad(f"{attr} is not multi-valued: it takes no filter.", "invalidPath")
        fmatch = _FILTER.match(filter_raw)
        if not fmatch:
            raise bad(f"Only 'attribute eq value' filters are supported in paths, not {filter_raw!r}.", "invalidFilter")
        fattr = NAMES[kind].get(f"{attr.lower()}.{fmatch.group(1).lower()}")
        if fattr is None:
            raise bad(f"{attr} has no sub-attribute {fmatch.group(1)!r}.", "invalidFilter")
        flt = (fattr, json.loads(fmatch.group(2).lower() if fmatch.group(2)[0] != '"' else fmatch.group(2)))
    return attr, flt, sub


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    return bool(a == b)


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _identity(item: Any) -> Any:
    return item.get("value") if isinstance(item, dict) else item


def _apply(kind: str, doc: dict[str, Any], op: str, path: Path, value: Any) -> None:
    attr, flt, sub = path
    if attr not in MULTI:
        if sub is None:
            if op == "remove":
                if attr in REQUIRED and not (kind == "User" and attr == "displayName"):
                    raise bad(f"{attr} is required: it cannot be removed.", "invalidValue")
                doc[attr] = None
            elif attr == "name":
                if not isinstance(value, dict):
                    raise bad("name takes an object (givenName, familyName).")
                doc["name"] = {**(doc.get("name") or {}), **canonical_value(kind, attr, value)}
            else:
                doc[attr] = canonical_value(kind, attr, value)
        else:
            parent = dict(doc.get(attr) or {})
            if op == "remove":
                parent.pop(sub, None)
            else:
                parent[sub] = value
            doc[attr] = parent
        return

    items: list[Any] = list(doc.get(attr) or [])
    if flt is None and sub is None:
        new = [v for v in canonical_value(kind, attr, _items(value)) if v is not None] if value is not None else []
        if op == "replace":
            items = new
        elif op == "add":
            known = [_identity(i) for i in items]
            items += [v for v in new if _identity(v) not in known]
        elif value is None:
            items = []
        else:  # remove the listed members (Okta, Entra ID): by value
            gone = [_identity(v) for v in new]
            items = [i for i in items if _identity(i) not in gone]
        doc[attr] = items
        return

    def matches(item: Any) -> bool:
        return flt is None or (isinstance(item, dict) and _same(item.get(flt[0]), flt[1]))

    hit = [i for i, item in enumerate(items) if matches(item)]
    if op == "remove":
        if sub is None:
            items = [item for i, item in enumerate(items) if i not in hit]
        else:
            for i in hit:
                items[i] = {k: v for k, v in items[i].items() if k != sub}
    else:
        if sub is not None:
            coerced = as_bool(value) if f"{attr.lower()}.{sub.lower()}" in BOOLEAN else value
            patch = {sub: coerced}
        else:
            if not isinstance(value, dict):
                raise bad(f"A filtered {attr} path takes an object as its value.")
            patch = canonical_value(kind, attr, value)
        for i in hit:
            items[i] = {**items[i], **patch}
        if not hit:  # Entra ID replaces emails[type eq "work"].value on a user who has none yet
            items.append({**({flt[0]: flt[1]} if flt else {}), **patch})
    doc[attr] = items


def apply_patch(kind: str, doc: dict[str, Any], body: Any) -> dict[str, Any]:
    """The document after the body's operations (the input is not changed); raises ScimError."""
    if not isinstance(body, dict):
        raise bad("The body must be a PatchOp object.", "invalidSyntax")
    schemas = key(body, "schemas")
    if not isinstance(schemas, list) or PATCH_SCHEMA.lower() not in [str(s).lower() for s in schemas]:
        raise bad(f"schemas must list {PATCH_SCHEMA}.", "invalidSyntax")
    operations = key(body, "Operations")
    if not isinstance(operations, list) or not operations:
        raise bad("Operations must be a non-empty list.", "invalidSyntax")
    out = copy.deepcopy(doc)
    for n, operation in enumerate(operations):
        if not isinstance(operation, dict):
            raise bad(f"Operations[{n}] must be an object.", "invalidSyntax")
        op = str(key(operation, "op") or "").lower()
        if op not in ("add", "replace", "remove"):
            raise bad(f"Operations[{n}].op must be add, replace or remove.", "invalidSyntax")
        raw_path, value = key(operation, "path"), key(operation, "value")
        if raw_path in (None, ""):
            if op == "remove":
                raise bad(f"Operations[{n}]: remove needs a path.", "noTarget")
            if not isinstance(value, dict):
                raise bad(f"Operations[{n}]: without a path, value must be an object of attributes.", "invalidValue")
            for name, item in value.items():
                if str(name).lower() in READ_ONLY:
                    continue  # some providers echo id or schemas back: nothing to change
                parsed = parse_path(kind, name)
                if parsed is not None:
                    _apply(kind, out, op, parsed, item)
            continue
        parsed = parse_path(kind, raw_path)
        if parsed is None:
            continue
        if op != "remove" and value is None:
            raise bad(f"Operations[{n}]: {op} needs a value.", "invalidValue")
        _apply(kind, out, op, parsed, value)
    return out


__all__ = ["ScimError", "apply_patch", "as_bool", "canonical_value", "key", "parse_path"]
