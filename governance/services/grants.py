"""Ending grants. Grants are never deleted: revocation stamps the row."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.roles import is_governance_admin, is_security_officer
from audit import services as audit

from ..errors import ConflictError, InvalidInput, NotPermitted
from ..managed import refuse_if_managed
from ..models import Grant, GrantStatus, JobAction
from ..policy import holds_dataset_perm
from .common import refusal_recorded
from .engine.jobs import provisioning_job_create

log = logging.getLogger(__name__)


def may_revoke(actor: Any, grant: Grant) -> bool:
    """Owners/stewards of the dataset, security officers and governance admins revoke; a grantee may
    relinquish their own grant."""
    if actor is None or not actor.is_active:
        return False
    if grant.grantee_user_id == actor.pk:
        return True
    return (
        is_security_officer(actor)
        or is_governance_admin(actor)
        or holds_dataset_perm(actor, grant.dataset, "approve_access")
    )


def grant_revoke(*, grant: Grant | int, actor: Any, reason: str) -> Grant:
    """End a grant now. The reason is required: it is what an auditor reads later."""
    pk = grant if isinstance(grant, int) else grant.pk
    target = grant if isinstance(grant, Grant) else (Grant, grant)
    with refusal_recorded(action="grant.revoke", actor=actor, target=target), transaction.atomic():
        try:
            locked = Grant.objects.select_for_update(of=("self",)).select_related("dataset").get(pk=pk)
        except Grant.DoesNotExist as exc:
            raise InvalidInput(f"There is no grant #{pk}.", field="grant") from exc
        if not may_revoke(actor, locked):
            raise NotPermitted(
                f"You cannot revoke access to {locked.dataset.qualified_name}: "
                "only its owners and stewards, security officers, governance admins or the grantee can."
            )
        if locked.revoked_at is not None:
            raise ConflictError(f"Grant #{locked.pk} was already revoked.", state=locked.status)
        if locked.ends_at <= timezone.now():
            raise ConflictError(f"Grant #{locked.pk} already ended.", state=locked.status)
        refuse_if_managed(locked)  # a standing grant of a policy document ends when the document drops it
        reason = (reason or "").strip()
        if not reason:
            raise InvalidInput("Say why the access is revoked.", field="reason")
        revoke_locked(locked=locked, actor=actor, reason=reason)
    return locked


def revoke_locked(*, locked: Grant, actor: Any, reason: str, metadata: dict[str, Any] | None = None) -> None:
    """Stamp a grant that is locked (select_for_update), in force and checked by the caller as
    revocable, record it and queue its revocation on the target. The one place a grant is revoked:
    `grant_revoke` (one grant, the revoker's rights checked) and offboarding (every grant of a
    leaver) both end here."""
    now = timezone.now()
    before = locked.status
    locked.revoked_at = now
    locked.revoked_by = actor
    locked.revoke_reason = reason
    locked.status = GrantStatus.REVOKED
    locked.save(update_fields=["revoked_at", "revoked_by", "revoke_reason", "status", "updated_at"])
    audit.record(
        action="grant.revoked",
        actor=actor,
        target=locked,
        changes={"status": [before, GrantStatus.REVOKED]},
        reason=reason,
        metadata={"dataset": locked.dataset.qualified_name, "level": locked.level, **(metadata or {})},
    )
    provisioning_job_create(grant=locked, action=JobAction.REVOKE, actor=actor)


def grant_expire(*, grant: Grant | int, now: dt.datetime | None = None) -> Grant | None:
    """The end of a grant passed: mark it expired and queue its revocation (system actor)."""
    pk = grant if isinstance(grant, int) else grant.pk
    now = now or timezone.now()
    with transaction.atomic():
        locked = Grant.objects.select_for_update(of=("self",)).select_related("dataset__source").get(pk=pk)
        if locked.status in (GrantStatus.EXPIRED, GrantStatus.REVOKED) or locked.ends_at > now:
            return None  # already ended, or extended meanwhile
        before = locked.status
        locked.status = GrantStatus.EXPIRED
        locked.save(update_fields=["status", "updated_at"])
        audit.record(
            action="grant.expired",
            actor=None,
            target=locked,
            changes={"status": [before, GrantStatus.EXPIRED]},
            reason=f"Ended at {locked.ends_at.isoformat()}.",
            metadata={"dataset": locked.dataset.qualified_name, "level": locked.level},
        )
        provisioning_job_create(grant=locked, action=JobAction.REVOKE, actor=None)
    return locked


def grants_expire_due(*, now: dt.datetime | None = None) -> int:
    """Expire every grant whose end passed (the beat task, every minute). One transaction each."""
    now = now or timezone.now()
    due = list(
        Grant.objects.filter(ends_at__lte=now, revoked_at__isnull=True)
        .exclude(status__in=[GrantStatus.EXPIRED, GrantStatus.REVOKED])
        .order_by("ends_at")
        .values_list("pk", flat=True)[:5000]
    )
    expired = 0
    for pk in due:
        try:
            expired += grant_expire(grant=pk, now=now) is not None
        except Exception:  # one bad row must not hold back every later expiry (the list is sorted)
            log.exception("Could not expire grant %s; the next run tries again", pk)
    return expired
