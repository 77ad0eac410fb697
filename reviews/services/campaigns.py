"""Campaigns: create, start (the snapshot and the assignment), the deadline, the close.

Every write locks what it changes, checks its state, and records its audit event in the same
transaction (house rules). The beat tasks (reviews/tasks.py) call `review_campaigns_start_due` and
`review_campaigns_apply_deadlines`; both take one transaction per campaign, so one bad campaign
never holds back the others.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from audit import chain, witnesses
from audit import services as audit
from audit.models import AuditEvent, Outcome
from governance.errors import ConflictError, InvalidInput, NotPermitted
from governance.models import Grant, RoleMembership
from governance.policy import RESTRICTED_SLUG
from governance.services.common import refusal_recorded

from .. import schedule
from ..assignment import Candidates, escalation_target, may_manage_campaigns
from ..models import AssignedVia, CampaignStatus, DeadlineAction, Decision, Recurrence, ReviewCampaign, ReviewItem
from . import notices
from .decisions import apply_locked

log = logging.getLogger(__name__)

CAMPAIGN_FIELDS = [
    "name", "description", "source", "classification", "dataset_owner", "role", "older_than_days",
    "include_memberships", "recurrence", "cron", "starts_at", "duration_days", "remind_days_before",
    "deadline_action",
]  # fmt: skip


def review_campaign_create(*, actor: Any, name: str, **fields: Any) -> ReviewCampaign:
    """A campaign as described (see `ReviewCampaign`). A one-off without `starts_at` stays
    scheduled until someone starts it; a series gets its first start from its recurrence."""
    with refusal_recorded(action="review_campaign.create", actor=actor, metadata={"name": name}):
        with transaction.atomic():
            if not may_manage_campaigns(actor):
                raise NotPermitted("Only security officers and governance admins run access reviews.")
            name = (name or "").strip()
            if not name:
                raise InvalidInput("A campaign needs a name.", field="name")
            unknown = set(fields) - set(CAMPAIGN_FIELDS)
            if unknown:
                raise InvalidInput(f"Unknown field(s): {', '.join(sorted(unknown))}.")
            campaign = ReviewCampaign(name=name, created_by=actor, **fields)
            if campaign.recurrence not in Recurrence.values:
                raise InvalidInput(f"{campaign.recurrence!r} is not a recurrence.", field="recurrence")
            if campaign.deadline_action not in DeadlineAction.values:
                raise InvalidInput(f"{campaign.deadline_action!r} is not a deadline action.", field="deadline_action")
            if campaign.duration_days < 1:
                raise InvalidInput("A review lasts at least a day.", field="duration_days")
            expr = schedule.expression(campaign.recurrence, campaign.cron)
            if expr is not None:
                if campaign.recurrence != Recurrence.CRON:
                    campaign.cron = expr
                first = schedule.next_after(expr, timezone.now())
                campaign.starts_at = campaign.starts_at or first
            elif campaign.cron:
                raise InvalidInput("Only a campaign recurring by cron takes a cron expression.", field="cron")
            campaign.save()
            audit.record(
                action="review_campaign.created",
                actor=actor,
                target=campaign,
                changes=audit.diff({}, audit.snapshot(campaign, CAMPAIGN_FIELDS)),
            )
    return campaign


def grants_in_scope(campaign: ReviewCampaign, now: dt.datetime) -> QuerySet[Grant]:
    """The grants in force (`GrantQuerySet.active`, the one definition) that the scope names."""
    qs = Grant.objects.active(now)
    if campaign.source_id:
        qs = qs.filter(dataset__source_id=campaign.source_id)
    if campaign.classification_id:
        qs = qs.filter(dataset__classification_id=campaign.classification_id)
    if campaign.dataset_owner_id:
        qs = qs.filter(dataset__owner_id=campaign.dataset_owner_id)
    if campaign.role_id:
        qs = qs.filter(grantee_role_id=campaign.role_id)
    if campaign.older_than_days:
        qs = qs.filter(starts_at__lte=now - dt.timedelta(days=campaign.older_than_days))
    return qs.select_related("dataset__owner", "dataset__classification", "grantee_role__owner").order_by("pk")


def memberships_in_scope(campaign: ReviewCampaign, now: dt.datetime) -> QuerySet[RoleMembership]:
    if not campaign.include_memberships:
        return RoleMembership.objects.none()
    qs = RoleMembership.objects.active(now)
    if campaign.role_id:
        qs = qs.filter(role_id=campaign.role_id)
    if campaign.older_than_days:
        qs = qs.filter(starts_at__lte=now - dt.timedelta(days=campaign.older_than_days))
    return qs.select_related("role__owner", "user").order_by("pk")


def _snapshot(campaign: ReviewCampaign, now: dt.datetime) -> list[ReviewItem]:
    items = [
        ReviewItem(
            campaign=campaign, grant=g, subject_user_id=g.grantee_user_id, subject_role=g.grantee_role,
            dataset=g.dataset, level=g.level, classification=g.dataset.classification.name,
            restricted=g.dataset.classification.slug == RESTRICTED_SLUG,
            access_started_at=g.starts_at, access_ends_at=g.ends_at,
        )
        for g in grants_in_scope(campaign, now)
    ]  # fmt: skip
    items += [
        ReviewItem(
            campaign=campaign, membership=m, subject_user=m.user, subject_role=m.role,
            access_started_at=m.starts_at, access_ends_at=m.ends_at,
        )
        for m in memberships_in_scope(campaign, now)
    ]  # fmt: skip
    candidates = Candidates()
    for item in items:
        item.reviewer, item.assigned_via = candidates.first(item)
    return items


def review_campaign_start(*, campaign: ReviewCampaign | int, actor: Any = None) -> ReviewCampaign:
    """Open a scheduled one-off: snapshot the access in scope into items, assign each its reviewer
    and tell every reviewer (once). `actor` None is the beat task; a person must manage campaigns."""
    pk = campaign if isinstance(campaign, int) else campaign.pk
    with refusal_recorded(action="review_campaign.start", actor=actor, target=(ReviewCampaign, pk)):
        with transaction.atomic():
            if actor is not None and not may_manage_campaigns(actor):
                raise NotPermitted("Only security officers and governance admins run access reviews.")
            locked = ReviewCampaign.objects.select_for_update().get(pk=pk)
            if locked.is_series:
                raise ConflictError("A recurring campaign opens one occurrence per period; it is not started itself.")
            if locked.status != CampaignStatus.SCHEDULED:
                raise ConflictError(f"{locked.name} was already started.", state=locked.status)
            now = timezone.now()
            items = _snapshot(locked, now)
            ReviewItem.objects.bulk_create(items)
            locked.status = CampaignStatus.OPEN
            locked.started_at = now
            locked.deadline_at = now + dt.timedelta(days=locked.duration_days)
            locked.save(update_fields=["status", "started_at", "deadline_at"])
            unassigned = sum(1 for i in items if i.reviewer_id is None)
            audit.record(
                action="review_campaign.started",
                actor=actor,
                target=locked,
                changes={"status": [CampaignStatus.SCHEDULED, CampaignStatus.OPEN]},
                metadata={
                    "items": len(items),
                    "grants": sum(1 for i in items if i.grant_id),
                    "memberships": sum(1 for i in items if i.membership_id),
                    "unassigned": unassigned,
                    "deadline_at": locked.deadline_at,
                },
            )
            for reviewer_id in sorted({i.reviewer_id for i in items if i.reviewer_id}):
                notices.assigned(campaign=locked, reviewer_id=reviewer_id, actor=actor)
    return locked


def _occurrence_of(series: ReviewCampaign, at: dt.datetime) -> ReviewCampaign:
    copied = {f: getattr(series, f) for f in CAMPAIGN_FIELDS if f not in ("recurrence", "cron", "starts_at", "name")}
    occurrence = ReviewCampaign.objects.create(
        name=f"{series.name} ({at:%Y-%m-%d})", created_by=series.created_by, series=series, starts_at=at, **copied
    )
    audit.record(
        action="review_campaign.created", actor=None, target=occurrence, metadata={"series": series.pk, "at": at}
    )
    return occurrence


def review_campaigns_start_due(*, now: dt.datetime | None = None) -> int:
    """Beat: open the one-offs whose start came, and one occurrence of each series whose period
    came (then move the series to its next start). Returns how many campaigns opened."""
    now = now or timezone.now()
    opened = 0
    for pk in ReviewCampaign.objects.filter(status=CampaignStatus.SCHEDULED, starts_at__lte=now).values_list(
        "pk", flat=True
    ):
        try:
            with transaction.atomic():
                series = ReviewCampaign.objects.select_for_update().get(pk=pk)
                if series.status != CampaignStatus.SCHEDULED or not series.starts_at or series.starts_at > now:
                    continue
                if series.is_series:
                    expr = schedule.expression(series.recurrence, series.cron)
                    assert expr is not None
                    due = series.starts_at
                    series.starts_at = schedule.next_after(expr, max(now, due))
                    series.save(update_fields=["starts_at"])
                    target = _occurrence_of(series, due)
                else:
                    target = series
                review_campaign_start(campaign=target.pk, actor=None)
            opened += 1
        except Exception:  # one broken campaign must not hold back the others
            log.exception("Could not start review campaign %s; the next run tries again", pk)
    return opened


def review_campaign_apply_deadline(*, campaign: ReviewCampaign | int, now: dt.datetime | None = None) -> int:
    """The deadline passed: apply the campaign's action to every undecided item (revoke, keep, or
    give it to a security officer). Returns how many items it touched. Escalated items stay
    undecided with their new reviewer; the campaign closes once nothing is left undecided."""
    pk = campaign if isinstance(campaign, int) else campaign.pk
    now = now or timezone.now()
    with transaction.atomic():
        locked = ReviewCampaign.objects.select_for_update().get(pk=pk)
        if locked.status != CampaignStatus.OPEN or locked.deadline_applied_at or not locked.deadline_at:
            return 0
        if locked.deadline_at > now:
            return 0
        pending = list(
            ReviewItem.objects.select_for_update(of=("self",))
            .filter(campaign=locked, decision=Decision.PENDING)
            .select_related("dataset__owner", "subject_role__owner")
            .order_by("pk")
        )
        action = locked.deadline_action
        candidates = Candidates()
        for item in pending:
            if action == DeadlineAction.ESCALATE:
                officer = escalation_target(item, candidates)
                before = item.reviewer_id
                item.reviewer, item.assigned_via = officer, AssignedVia.ESCALATED
                item.save(update_fields=["reviewer", "assigned_via"])
                audit.record(
                    action="review_item.escalated",
                    actor=None,
                    target=item,
                    changes={"reviewer": [before, item.reviewer_id]},
                    metadata={"campaign": locked.pk},
                )
                if officer is not None:
                    notices.assigned(campaign=locked, reviewer_id=officer.pk, actor=None, escalated=True)
            else:
                decision = Decision.REVOKE if action == DeadlineAction.REVOKE else Decision.KEEP
                comment = f"Not decided by the deadline ({locked.deadline_at:%Y-%m-%d %H:%M} UTC): {action} applied."
                apply_locked(
                    item=item, actor=None, decision=decision, comment=comment, new_ends_at=None, at_deadline=True
                )
        locked.deadline_applied_at = now
        locked.save(update_fields=["deadline_applied_at"])
        audit.record(
            action="review_campaign.deadline_applied",
            actor=None,
            target=locked,
            metadata={"action": action, "items": len(pending)},
        )
    if action != DeadlineAction.ESCALATE:
        review_campaign_close(campaign=pk, actor=None)
    return len(pending)


def review_campaigns_apply_deadlines(*, now: dt.datetime | None = None) -> int:
    """Beat: every open campaign past its deadline gets its action (one transaction each), and
    every closed campaign without its checkpoint gets it."""
    now = now or timezone.now()
    due = ReviewCampaign.objects.filter(
        status=CampaignStatus.OPEN, deadline_at__lte=now, deadline_applied_at__isnull=True
    ).values_list("pk", flat=True)
    touched = 0
    for pk in list(due):
        try:
            touched += review_campaign_apply_deadline(campaign=pk, now=now)
        except Exception:
            log.exception("Could not apply the deadline of review campaign %s; the next run tries again", pk)
    # A close whose checkpoint could not be taken (the chain's lock held too long): take it now.
    unchecked = ReviewCampaign.objects.filter(status=CampaignStatus.CLOSED, close_checkpoint={})
    for pk in list(unchecked.values_list("pk", flat=True)):
        try:
            review_campaign_close(campaign=pk, actor=None)
        except Exception:
            log.exception("Could not take the close checkpoint of review campaign %s; the next run tries again", pk)
    return touched


# How long a close waits for the periodic sealer (it holds the chain's lock for a moment every few
# seconds) before the checkpoint is refused.
CHECKPOINT_SEAL_WAIT = 10.0


def review_campaign_close(*, campaign: ReviewCampaign | int, actor: Any) -> ReviewCampaign:
    """Close a campaign whose every item is decided, then seal the audit chain through the close
    event and keep its signed head on the campaign: the evidence's checkpoint (`audit_verify
    --checkpoint`).

    The checkpoint is taken after the close commits (the sealer chains committed events), waiting
    up to CHECKPOINT_SEAL_WAIT seconds for a running sealer. When the chain cannot be sealed through
    the close event, the campaign stays closed without a checkpoint and ConflictError says why;
    closing it again takes the checkpoint."""
    pk = campaign if isinstance(campaign, int) else campaign.pk
    with refusal_recorded(action="review_campaign.close", actor=actor, target=(ReviewCampaign, pk)):
        with transaction.atomic():
            if actor is not None and not may_manage_campaigns(actor):
                raise NotPermitted("Only security officers and governance admins close access reviews.")
            locked = ReviewCampaign.objects.select_for_update().get(pk=pk)
            if locked.status == CampaignStatus.CLOSED and not locked.close_checkpoint:
                closed_event = _close_event_id(locked)
            else:
                if locked.status != CampaignStatus.OPEN:
                    raise ConflictError(f"{locked.name} is not open.", state=locked.status)
                left = ReviewItem.objects.filter(campaign=locked, decision=Decision.PENDING).count()
                if left:
                    raise ConflictError(f"{left} item(s) of {locked.name} are not decided yet.", state=locked.status)
                locked.status = CampaignStatus.CLOSED
                locked.closed_at = timezone.now()
                locked.save(update_fields=["status", "closed_at"])
                closed_event = audit.record(
                    action="review_campaign.closed",
                    actor=actor,
                    target=locked,
                    changes={"status": [CampaignStatus.OPEN, CampaignStatus.CLOSED]},
                ).pk
    # After the commit: the close event is sealed with everything before it, and the head signed.
    try:
        chain.seal_through(closed_event, timeout=CHECKPOINT_SEAL_WAIT)
    except ValueError as exc:
        with transaction.atomic():
            audit.record(
                action="review_campaign.checkpoint", actor=actor, target=locked, outcome=Outcome.FAILED, reason=str(exc)
            )
        raise ConflictError(
            f"{locked.name} is closed, but its checkpoint was not taken: {exc}. Close it again to take it.",
            state=CampaignStatus.CLOSED,
        ) from exc
    head = chain.head()
    document = witnesses.document(head.seq, head.chain_mac)
    with transaction.atomic():
        ReviewCampaign.objects.filter(pk=pk).update(close_checkpoint=document)
        audit.record(
            action="review_campaign.checkpoint",
            actor=actor,
            target=locked,
            metadata={"seq": head.seq, "chain_mac": head.chain_mac},
        )
    locked.close_checkpoint = document
    return locked


def _close_event_id(campaign: ReviewCampaign) -> int:
    """The event that recorded the campaign's close (a close whose checkpoint was not taken)."""
    found = (
        AuditEvent.objects.filter(
            action="review_campaign.closed", target_type=ReviewCampaign._meta.label_lower, target_id=str(campaign.pk)
        )
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )
    if found is None:
        raise ConflictError(f"{campaign.name} is closed but no close event was recorded.", state=campaign.status)
    return found
