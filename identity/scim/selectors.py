"""What SCIM sees: people (not service accounts, not superusers: the break-glass admins stay out of
the provider's reach), minus those the provider deleted; and the filters providers send."""

from __future__ import annotations

import json
import re
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
    if attr == "id":
        if kind == "User" and not value.isdigit():
            return queryset.none()
        if kind == "Group" and not re.fullmatch(r"[0-9a-fA-F-]{32,36}", value):
            return queryset.none()
    return queryset.filter(**{lookups[attr]: value})
