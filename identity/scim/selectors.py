"""What SCIM sees: people (not service accounts, not superusers: the break-glass admins stay out of
the provider's reach), minus those the provider deleted; and the filters providers send."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Prefetch, QuerySet

from .errors import bad
from .models import ScimGroup, ScimGroupMember

_EQ = re.compile(r'^\s*([A-Za-z$][\w$.:-]*)\s+eq\s+("(?:[^"\\]|\\.)*")\s*$', re.I)
# attribute (lower case) -> ORM lookup, per resource type; `eq` on these is all Okta and Entra ID send.
USER_FILTERS = {"username": "username__iexact", "externalid": "scim__external_id", "id": "pk"}
GROUP_FILTERS = {"displayname": "display_name__iexact", "externalid": "external_id", "id": "pk"}
_PREFIX = {
    "User": "urn:ietf:params:scim:schemas:core:2.0:user:",
    "Group": "urn:ietf:params:scim:schemas:core:2.0:group:",
}


def user_pk(text: Any) -> int | None:
    """A user id as SCIM sends it (a string), or None when it cannot be one (not digits, or beyond
    a bigint, which PostgreSQL would refuse with an error rather than find nothing)."""
    text = str(text)
    return int(text) if text.isdigit() and int(text) < 2**63 else None


def group_pk(text: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(text))
    except ValueError:
        return None


def scim_users() -> QuerySet[Any]:
    return (
        get_user_model()
        .objects.filter(is_service_account=False, is_superuser=False)
        .exclude(scim__deleted_at__isnull=False)
    )


def users_for_list() -> QuerySet[Any]:
    groups = Prefetch(
        "scim_group_memberships",
        queryset=ScimGroupMember.objects.select_related("group").order_by("group__display_name"),
    )
    return scim_users().select_related("scim").prefetch_related(groups).order_by("pk")


def groups_for_list() -> QuerySet[ScimGroup]:
    members = Prefetch("memberships", queryset=ScimGroupMember.objects.select_related("user").order_by("user_id"))
    return ScimGroup.objects.prefetch_related(members).order_by("created_at", "id")


def filtered(kind: str, queryset: QuerySet[Any], expression: str | None) -> QuerySet[Any]:
    """`attribute eq "value"` (userName, externalId, id for users; displayName, externalId, id for
    groups); anything else is a 400 invalidFilter naming what is supported."""
    if expression is None or not expression.strip():
        return queryset
    match = _EQ.match(expression)
    lookups = USER_FILTERS if kind == "User" else GROUP_FILTERS
    attr = match.group(1).lower() if match else ""
    if attr.startswith(_PREFIX[kind]):
        attr = attr[len(_PREFIX[kind]) :]
    if not match or attr not in lookups:
        supported = ", ".join(f'{a} eq "..."' for a in lookups)
        raise bad(f"Unsupported filter {expression!r}: this server supports {supported}.", "invalidFilter")
    value = json.loads(match.group(2))
    if "\x00" in value:
        raise bad("A filter value must not contain NUL characters.", "invalidFilter")
    if attr == "id":
        value = user_pk(value) if kind == "User" else group_pk(value)
        if value is None:
            return queryset.none()
    return queryset.filter(**{lookups[attr]: value})
