"""The one sync from an identity provider's groups to the portal: Role memberships and duties.

Called on every OIDC sign-in with the groups claim, and by SCIM when the provider pushes a user's
groups. It adds what the mapped groups give and takes away only what this same source gave before:
a membership added in the portal, or by the other source, is never touched. Role memberships go
through the roles service, so their grants reach (and leave) the targets through the engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models.functions import Lower

from audit import services as audit
from governance.models import MembershipSource, RoleMembership
from governance.services.roles import role_member_sync_add, role_member_sync_remove

from ..models import GroupMapping, ManagedGroupMembership


@dataclass
class SyncResult:
    roles_added: list[str] = field(default_factory=list)
    roles_removed: list[str] = field(default_factory=list)
    duties_added: list[str] = field(default_factory=list)
    duties_removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.roles_added or self.roles_removed or self.duties_added or self.duties_removed)


def normalised(groups: Iterable[Any]) -> set[str]:
    """The provider's group names, compared without regard to case or surrounding blanks; anything
    that is not a non-empty string (a hostile or broken claim) is ignored."""
    return {g.strip().lower() for g in groups if isinstance(g, str) and g.strip()}


def memberships_sync(*, user: Any, groups: Iterable[Any], source: str, actor: Any = None) -> SyncResult:
    """Make `user`'s `source`-managed memberships match what `groups` map to."""
    if source not in (MembershipSource.OIDC, MembershipSource.SCIM):
        raise ValueError(f"{source!r} does not sync memberships")
    names = normalised(groups)
    result = SyncResult()
    reason = f"Identity provider groups ({MembershipSource(source).label})"
    with transaction.atomic():
        mappings = list(
            GroupMapping.objects.annotate(key=Lower("idp_group"))
            .filter(key__in=names)
            .select_related("role", "portal_group")
        )
        wanted_roles = {m.role.pk: m.role for m in mappings if m.role is not None}
        wanted_duties = {m.portal_group.pk: m.portal_group for m in mappings if m.portal_group is not None}

        held = list(RoleMembership.objects.filter(user=user, removed_at__isnull=True).select_related("role"))
        held_roles = {m.role_id for m in held}
        for role_id, role in sorted(wanted_roles.items(), key=lambda item: item[1].name):
            if role_id not in held_roles and role_member_sync_add(
                role=role, user=user, managed_by=source, actor=actor, reason=reason
            ):
                result.roles_added.append(role.slug)
        for membership in held:
            stale = membership.managed_by == source and membership.role_id not in wanted_roles
            if stale and role_member_sync_remove(membership=membership, managed_by=source, actor=actor, reason=reason):
                result.roles_removed.append(membership.role.slug)

        current = set(user.groups.values_list("pk", flat=True))
        managed = {m.group_id: m for m in ManagedGroupMembership.objects.filter(user=user)}
        for group_id, group in wanted_duties.items():
            if group_id not in current:
                user.groups.add(group)
                ManagedGroupMembership.objects.update_or_create(user=user, group=group, defaults={"managed_by": source})
                result.duties_added.append(group.name)
        for group_id, row in managed.items():
            if row.managed_by == source and group_id not in wanted_duties:
                user.groups.remove(group_id)
                row.delete()
                result.duties_removed.append(Group.objects.get(pk=group_id).name)
        if hasattr(user, "_portal_groups_cache"):
            del user._portal_groups_cache
        if result.changed:
            audit.record(
                action="identity.groups_synced",
                actor=actor,
                target=user,
                metadata={
                    "source": source,
                    "roles_added": result.roles_added,
                    "roles_removed": result.roles_removed,
                    "duties_added": result.duties_added,
                    "duties_removed": result.duties_removed,
                },
            )
    return result
