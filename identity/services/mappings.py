"""Group mappings: which IdP group gives which portal Role or duty. Governance admins edit them."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group
from django.db import transaction

from accounts.roles import is_governance_admin, portal_duties
from audit import services as audit
from governance.errors import ConflictError, InvalidInput, NotPermitted
from governance.models import Role
from governance.services.common import refusal_recorded

from ..models import GroupMapping


def _ensure_may_map(actor: Any) -> None:
    # A mapping hands a Role's grants (or a duty) to everyone the provider puts in the group.
    if not (is_governance_admin(actor) or getattr(actor, "is_superuser", False)):
        raise NotPermitted("Only governance admins can map identity-provider groups.")


def mapping_create(
    *, actor: Any, idp_group: str, role: Role | None = None, portal_group: Group | None = None
) -> GroupMapping:
    with refusal_recorded(action="identity.mapping_create", actor=actor, metadata={"idp_group": idp_group}):
        with transaction.atomic():
            _ensure_may_map(actor)
            idp_group = (idp_group or "").strip()
            if not idp_group:
                raise InvalidInput("Name the identity provider's group.", field="idp_group")
            if len(idp_group) > 255:
                raise InvalidInput("A group name has at most 255 characters.", field="idp_group")
            if (role is None) == (portal_group is None):
                raise InvalidInput("A mapping gives either a role or a portal duty, not both.", field="role")
            if portal_group is not None and portal_group.name not in portal_duties():
                raise InvalidInput(f"{portal_group.name!r} is not one of the portal's duties.", field="portal_group")
            taken = GroupMapping.objects.filter(
                idp_group__iexact=idp_group, role=role, portal_group=portal_group
            ).exists()
            if taken:
                raise ConflictError(f"{idp_group!r} already maps to {role or portal_group}.")
            mapping = GroupMapping.objects.create(
                idp_group=idp_group, role=role, portal_group=portal_group, created_by=actor
            )
            audit.record(
                action="identity.mapping_created",
                actor=actor,
                target=mapping,
                metadata={
                    "idp_group": idp_group,
                    "role": role and role.slug,
                    "duty": portal_group and portal_group.name,
                },
            )
    return mapping


def mapping_delete(*, actor: Any, mapping: GroupMapping) -> None:
    """Members keep what the mapping gave until their next sync (sign-in or SCIM push)."""
    with refusal_recorded(action="identity.mapping_delete", actor=actor, target=mapping):
        with transaction.atomic():
            _ensure_may_map(actor)
            audit.record(
                action="identity.mapping_deleted",
                actor=actor,
                target=mapping,
                metadata={"idp_group": mapping.idp_group, "mapped_to": str(mapping.role or mapping.portal_group)},
            )
            mapping.delete()
