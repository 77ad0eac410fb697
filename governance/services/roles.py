"""Access roles and their time-bounded members."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from accounts.roles import is_governance_admin
from audit import services as audit

from ..errors import ConflictError, InvalidInput, NotPermitted
from ..managed import refuse_if_managed
from ..models import MembershipSource, Role, RoleMembership
from .common import assign_fields, refusal_recorded
from .engine.jobs import membership_jobs_create

ROLE_FIELDS = ["name", "slug", "kind", "description", "owner"]


def _ensure_role_admin(actor: Any, role: Role | None) -> None:
    if is_governance_admin(actor) or getattr(actor, "is_superuser", False):
        return
    if role is not None and actor is not None and role.owner_id == actor.pk:
        return
    raise NotPermitted("Only governance admins and the role's owner can manage a role.")


def _ensure_may_add_member(actor: Any, user: Any) -> None:
    """Joining a role hands over every grant the role holds, so adding members is for governance
    admins only (not role owners), and nobody adds themselves (separation of duties)."""
    if not (is_governance_admin(actor) or getattr(actor, "is_superuser", False)):
        raise NotPermitted("Only governance admins can add members to a role: membership carries its grants.")
    if actor.pk == user.pk:
        raise NotPermitted("You cannot add yourself to a role (separation of duties).")


def role_create(*, actor: Any, name: str, kind: str = "human", description: str = "", owner: Any = None) -> Role:
    with refusal_recorded(action="role.create", actor=actor, metadata={"name": name}), transaction.atomic():
        _ensure_role_admin(actor, None)
        name = name.strip()
        if not name:
            raise InvalidInput("A role needs a name.", field="name")
        if Role.objects.filter(name=name).exists():
            raise InvalidInput(f"A role named {name!r} already exists.", field="name")
        role = Role(name=name, slug=slugify(name), kind=kind, description=description, owner=owner)
        role.full_clean()
        role.save()
        audit.record(
            action="role.created", actor=actor, target=role, changes=audit.diff({}, audit.snapshot(role, ROLE_FIELDS))
        )
    return role


def role_update(*, role: Role, actor: Any, **fields: Any) -> Role:
    with refusal_recorded(action="role.update", actor=actor, target=role), transaction.atomic():
        role = Role.objects.select_for_update().get(pk=role.pk)
        _ensure_role_admin(actor, role)
        refuse_if_managed(role)
        changes = assign_fields(role, fields, ROLE_FIELDS)
        if changes:
            role.full_clean()
            role.save()
            audit.record(action="role.updated", actor=actor, target=role, changes=changes)
    return role


def role_member_add(
    *, role: Role, user: Any, actor: Any, ends_at: dt.datetime | None = None, reason: str = ""
) -> RoleMembership:
    """Add a member until `ends_at` (open-ended when None)."""
    with refusal_recorded(action="role.member_add", actor=actor, target=role, metadata={"user": user.username}):
        with transaction.atomic():
            _ensure_may_add_member(actor, user)
            refuse_if_managed(role)  # a role managed in code lists its members in its document
            now = timezone.now()
            if ends_at is not None and ends_at <= now:
                raise InvalidInput("The membership must end in the future.", field="ends_at")
            try:
                with transaction.atomic():
                    membership = RoleMembership.objects.create(
                        role=role, user=user, starts_at=now, ends_at=ends_at, added_by=actor, reason=reason
                    )
            except IntegrityError as exc:
                raise ConflictError(f"{user.username} is already a member of {role.name}.") from exc
            audit.record(
                action="role.member_added",
                actor=actor,
                target=role,
                reason=reason,
                metadata={"user": user.username, "ends_at": ends_at, "managed_by": MembershipSource.ADMIN},
            )
            membership_jobs_create(membership=membership, actor=actor)
    return membership


# --- memberships an identity provider manages (OIDC sign-in, SCIM) ---------------------------------
#
# The provider is the authority here, through the group mappings an admin configured: these paths do
# not ask the actor for the governance-admin duty (the actor is the SCIM client's token owner, or
# nobody for a sign-in), and each touches only the rows its source manages. A membership someone
# added in the portal is left alone by a sync, and a sync's row is not adopted by the portal.


def role_member_sync_add(
    *, role: Role, user: Any, managed_by: str, actor: Any = None, reason: str = ""
) -> RoleMembership | None:
    """Open a membership managed by `managed_by`; None when the user already holds one (whoever
    manages it: the open one is kept, so access never flickers)."""
    if managed_by not in (MembershipSource.OIDC, MembershipSource.SCIM):
        raise InvalidInput(f"{managed_by!r} is not a source that syncs memberships.", field="managed_by")
    with transaction.atomic():
        if RoleMembership.objects.filter(role=role, user=user, removed_at__isnull=True).exists():
            return None
        try:
            with transaction.atomic():
                membership = RoleMembership.objects.create(
                    role=role, user=user, added_by=actor, reason=reason, managed_by=managed_by
                )
        except IntegrityError:  # a concurrent sync opened it first
            return None
        audit.record(
            action="role.member_added",
            actor=actor,
            target=role,
            reason=reason,
            metadata={"user": user.username, "ends_at": None, "managed_by": managed_by},
        )
        membership_jobs_create(membership=membership, actor=actor)
    return membership


def role_member_sync_remove(
    *, membership: RoleMembership, managed_by: str, actor: Any = None, reason: str = ""
) -> bool:
    """Close a membership that `managed_by` manages; False (and nothing changed) when it is closed
    already or someone else manages it."""
    with transaction.atomic():
        membership = (
            RoleMembership.objects.select_for_update(of=("self",)).select_related("role", "user").get(pk=membership.pk)
        )
        if membership.removed_at is not None or membership.managed_by != managed_by:
            return False
        close_locked(membership=membership, actor=actor, reason=reason)
    return True


def role_member_remove(*, membership: RoleMembership, actor: Any, reason: str = "") -> RoleMembership:
    with refusal_recorded(action="role.member_remove", actor=actor, target=membership.role), transaction.atomic():
        membership = (
            RoleMembership.objects.select_for_update(of=("self",)).select_related("role", "user").get(pk=membership.pk)
        )
        _ensure_role_admin(actor, membership.role)
        refuse_if_managed(membership.role)
        if membership.removed_at is not None:
            raise ConflictError(f"{membership.user.username} was already removed from {membership.role.name}.")
        close_locked(membership=membership, actor=actor, reason=reason)
    return membership


def close_locked(
    *, membership: RoleMembership, actor: Any, reason: str, metadata: dict[str, Any] | None = None
) -> None:
    """End an open membership that the caller locked and checked, record it and take it off the
    targets. The one place a membership is removed: by an admin, by a sync, by offboarding."""
    membership.removed_at = timezone.now()
    membership.removed_by = actor
    membership.save(update_fields=["removed_at", "removed_by"])
    audit.record(
        action="role.member_removed",
        actor=actor,
        target=membership.role,
        reason=reason,
        metadata={"user": membership.user.username, "managed_by": membership.managed_by, **(metadata or {})},
    )
    membership_jobs_create(membership=membership, actor=actor)


def role_memberships_end_due(*, now: dt.datetime | None = None) -> int:
    """Memberships whose end passed are closed and taken off the targets (beat, with grant expiry)."""
    now = now or timezone.now()
    due = list(
        RoleMembership.objects.filter(removed_at__isnull=True, ends_at__lte=now).values_list("pk", flat=True)[:5000]
    )
    ended = 0
    for pk in due:
        with transaction.atomic():
            membership = (
                RoleMembership.objects.select_for_update(of=("self",)).select_related("role", "user").get(pk=pk)
            )
            if membership.removed_at is not None:
                continue
            membership.removed_at = now
            membership.save(update_fields=["removed_at"])
            audit.record(
                action="role.member_expired",
                actor=None,
                target=membership.role,
                reason=f"Membership ended at {membership.ends_at.isoformat() if membership.ends_at else now}.",
                metadata={"user": membership.user.username},
            )
            membership_jobs_create(membership=membership)
            ended += 1
    return ended
