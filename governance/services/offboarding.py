"""A leaver loses everything: every personal grant is revoked, every role membership ends (whoever
manages it), the account is switched off. One service for every edge that learns that someone left
(SCIM today; an admin action or an HR feed later)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit import services as audit

from ..errors import InvalidInput, NotPermitted
from ..models import Grant, GrantStatus, RoleMembership
from .grants import revoke_locked
from .roles import close_locked


@dataclass
class Offboarded:
    grants_revoked: list[int] = field(default_factory=list)
    memberships_ended: list[int] = field(default_factory=list)
    deactivated: bool = False


def user_offboard(*, user: Any, actor: Any, reason: str) -> Offboarded:
    """Revoke every grant `user` holds in person and end every role membership they hold (portal,
    request, OIDC or SCIM), through the provisioning engine (jobs queued on commit), and set the
    account inactive; all in one transaction with one audit event per change and a summary event.

    The edge decides who may offboard (SCIM: a token with the `scim` scope, the provider being the
    authority on who works here); the actor is recorded on every event. Calling it again for a user
    already offboarded changes nothing and records nothing: deactivation must be safe to repeat, as
    identity providers retry and resend `active: false` with every update.
    """
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("Say why the person is offboarded.", field="reason")
    if actor is not None and getattr(actor, "pk", None) == user.pk:
        raise NotPermitted("You cannot offboard yourself.")
    result = Offboarded()
    with transaction.atomic():
        # Lock the account first: a concurrent grant approval or membership add for this person
        # waits, then sees an inactive user (approvals and syncs read the account afresh).
        locked_user = type(user).objects.select_for_update().get(pk=user.pk)
        now = timezone.now()
        grants = (
            Grant.objects.select_for_update(of=("self",))
            .select_related("dataset")
            .filter(grantee_user=locked_user, revoked_at__isnull=True, ends_at__gt=now)
            .exclude(status__in=[GrantStatus.EXPIRED, GrantStatus.REVOKED])
            .order_by("pk")
        )
        for grant in grants:
            revoke_locked(locked=grant, actor=actor, reason=reason, metadata={"offboarding": True})
            result.grants_revoked.append(grant.pk)
        memberships = (
            RoleMembership.objects.select_for_update(of=("self",))
            .select_related("role", "user")
            .filter(Q(user=locked_user), removed_at__isnull=True)
            .order_by("pk")
        )
        for membership in memberships:
            close_locked(membership=membership, actor=actor, reason=reason, metadata={"offboarding": True})
            result.memberships_ended.append(membership.pk)
        if locked_user.is_active:
            locked_user.is_active = False
            locked_user.save(update_fields=["is_active"])
            result.deactivated = True
        user.is_active = False
        if not (result.grants_revoked or result.memberships_ended or result.deactivated):
            return result
        audit.record(
            action="user.offboarded",
            actor=actor,
            target=locked_user,
            reason=reason,
            changes={"is_active": [True, False]} if result.deactivated else {},
            metadata={"grants_revoked": result.grants_revoked, "memberships_ended": result.memberships_ended},
        )
    return result
