"""Users and groups as SCIM resources (RFC 7643 §4), and the attributes/excludedAttributes
projection (RFC 7644 §3.9). Unassigned attributes are left out, as the RFC asks."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist

from .models import ScimGroup, ScimUser
from .schema import GROUP_SCHEMA, NAMES, USER_SCHEMA


def _iso(value: Any) -> str:
    return str(value.isoformat())


def scim_row(user: Any) -> ScimUser | None:
    try:
        return user.scim
    except ObjectDoesNotExist:
        return None


def user_document(user: Any) -> dict[str, Any]:
    """The stored attributes in SCIM's spelling (what a PATCH starts from)."""
    scim = scim_row(user)
    emails = (
        list(scim.emails) if scim and scim.emails else ([{"value": user.email, "primary": True}] if user.email else [])
    )
    name = {k: v for k, v in (("givenName", user.first_name), ("familyName", user.last_name)) if v}
    doc: dict[str, Any] = {"userName": user.username, "active": user.is_active}
    if name:
        doc["name"] = name
    if emails:
        doc["emails"] = emails
    if scim and scim.display_name:
        doc["displayName"] = scim.display_name
    if scim and scim.external_id:
        doc["externalId"] = scim.external_id
    return doc


def user_resource(user: Any, base: str) -> dict[str, Any]:
    scim = scim_row(user)
    groups = [
        {"value": str(m.group_id), "$ref": f"{base}/Groups/{m.group_id}", "display": m.group.display_name}
        for m in user.scim_group_memberships.all()
    ]
    out: dict[str, Any] = {"schemas": [USER_SCHEMA], "id": str(user.pk), **user_document(user)}
    if groups:
        out["groups"] = groups
    modified = scim.updated_at if scim else user.date_joined
    out["meta"] = {
        "resourceType": "User",
        "created": _iso(user.date_joined),
        "lastModified": _iso(max(modified, user.date_joined)),
        "location": f"{base}/Users/{user.pk}",
    }
    return out


def group_document(group: ScimGroup) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "displayName": group.display_name,
        "members": [{"value": str(m.user_id)} for m in group.memberships.all()],
    }
    if group.external_id:
        doc["externalId"] = group.external_id
    return doc


def group_resource(group: ScimGroup, base: str) -> dict[str, Any]:
    members = [{"value": str(m.user_id), "$ref": f"{base}/Users/{m.user_id}"} for m in group.memberships.all()]
    out: dict[str, Any] = {"schemas": [GROUP_SCHEMA], "id": str(group.pk), "displayName": group.display_name}
    if group.external_id:
        out["externalId"] = group.external_id
    if members:
        out["members"] = members
    out["meta"] = {
        "resourceType": "Group",
        "created": _iso(group.created_at),
        "lastModified": _iso(group.updated_at),
        "location": f"{base}/Groups/{group.pk}",
    }
    return out


def _split(kind: str, names: str | None) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for raw in (names or "").split(","):
        raw = raw.strip()
        if not raw:
            continue
        lowered = raw.lower()
        for prefix in (USER_SCHEMA.lower() + ":", GROUP_SCHEMA.lower() + ":"):
            if lowered.startswith(prefix):
                lowered = lowered[len(prefix) :]
        top, _, sub = lowered.partition(".")
        attr = NAMES[kind].get(top)
        if attr is not None:
            out.append((attr, NAMES[kind].get(f"{top}.{sub}") if sub else None))
    return out


ALWAYS = ("schemas", "id")


def project(kind: str, resource: dict[str, Any], attributes: str | None, excluded: str | None) -> dict[str, Any]:
    """Keep only `attributes` (plus id and schemas), or drop `excludedAttributes`."""
    wanted = _split(kind, attributes)
    if wanted:
        out = {k: v for k, v in resource.items() if k in ALWAYS}
        for attr, sub in wanted:
            if attr not in resource:
                continue
            if sub is None:
                out[attr] = resource[attr]
            elif isinstance(resource[attr], dict):
                out.setdefault(attr, {})[sub] = resource[attr].get(sub)
            elif isinstance(resource[attr], list):
                out[attr] = [{sub: item.get(sub)} for item in resource[attr] if isinstance(item, dict)]
        return out
    drop = _split(kind, excluded)
    out = dict(resource)
    for attr, sub in drop:
        if attr in ALWAYS or attr not in out:
            continue
        if sub is None:
            del out[attr]
        elif isinstance(out[attr], dict):
            out[attr] = {k: v for k, v in out[attr].items() if k != sub}
        elif isinstance(out[attr], list):
            out[attr] = [{k: v for k, v in i.items() if k != sub} for i in out[attr] if isinstance(i, dict)]
    return out
