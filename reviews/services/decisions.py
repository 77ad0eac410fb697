"""Decisions on review items: keep, revoke, shorten (one or many at once), and delegation.

Who decides an item: its reviewer, and nobody else (a campaign manager delegates it instead). The
separation-of-duties check is asked again at the decision (`assignment.own_access_refusal`): access
can come to reach the reviewer after the assignment (they joined the role), and no door (portal,
admin, API) can then let them confirm it. Revocations go through governance's services: a grant
through `grant_revoke` (a person) or `revoke_locked` (the deadline, no person), a membership through
`close_locked`; each queues its provisioning job, and the job verifies the removal on the target.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit import services as audit
from governance.errors import ConflictError, InvalidInput, NotPermitted
from governance.models import Grant, RoleMembership
from governance.services.common import refusal_recorded
from governance.services.grant_ends import grant_end_change
from governance.services.grants import grant_revoke, revoke_locked
from governance.services.roles import close_locked

from ..assignment import eligible_refusal, may_manage_campaigns, own_access_refusal
from ..models import AssignedVia, CampaignStatus, Decision, ReviewItem
from . import notices

ITEM_FIELDS = ["decision", "comment", "new_ends_at", "decided_by", "decided_at", "revoked_at"]


def _reason(item: ReviewItem, comment: str) -> str:
    return comment or f"Revoked in the access review {item.campaign.name!r}."


def _revoke(item: ReviewItem, actor: Any, comment: str) -> bool:
    """Take the access away; False when it had already ended (nothing left to revoke)."""
    meta = {"review_item": item.pk, "campaign": item.campaign_id}
    if item.grant_id is not None:
        grant = Grant.objects.select_for_update(of=("self",)).select_related("dataset").get(pk=item.grant_id)
        if not grant.is_in_force():
            return False
        if actor is None:
            revoke_locked(locked=grant, actor=None, reason=_reason(item, comment), metadata=meta)
        else:
            grant_revoke(grant=grant.pk, actor=actor, reason=_reason(item, comment))
        return True
    assert item.membership_id is not None  # one subject or the other (a check constraint)
    membership = (
        RoleMembership.objects.select_for_update(of=("self",)).select_related("role", "user").get(pk=item.membership_id)
    )
    if membership.removed_at is not None:
        return False
    close_locked(membership=membership, actor=actor, reason=_reason(item, comment), metadata=meta)
    return True


def apply_locked(
    *, item: ReviewItem, actor: Any, decision: str, comment: str, new_ends_at: dt.datetime | None, at_deadline: bool
) -> None:
    """Record a decision on a locked, undecided item and carry it out (the caller checked who may)."""
    before = audit.snapshot(item, ITEM_FIELDS)
    now = timezone.now()
    if decision == Decision.REVOKE and _revoke(item, actor, comment):
        item.revoked_at = now
    elif decision == Decision.SHORTEN:
        assert item.grant_id is not None and new_ends_at is not None
        grant_end_change(grant=item.grant_id, ends_at=new_ends_at, actor=actor, reason=comment)
        item.new_ends_at = new_ends_at
    item.decision = decision
    item.comment = comment
    item.decided_by = actor
    item.decided_at = now
    item.decided_at_deadline = at_deadline
    item.save(update_fields=[*ITEM_FIELDS, "decided_at_deadline"])
    audit.record(
        action="review_item.decided",
        actor=actor,
        target=item,
        changes=audit.diff(before, audit.snapshot(item, ITEM_FIELDS)),
        reason=comment,
        metadata={
            "campaign": item.campaign_id,
            "grant": item.grant_id,
            "membership": item.membership_id,
            "at_deadline": at_deadline,
        },
    )


def _check(item: ReviewItem, actor: Any, decision: str, comment: str, new_ends_at: dt.datetime | None) -> None:
    if item.campaign.status != CampaignStatus.OPEN:
        raise ConflictError(f"The campaign {item.campaign.name!r} is not open.", state=item.campaign.status)
    if item.decision != Decision.PENDING:
        raise ConflictError(f"Review item #{item.pk} was already decided ({item.decision}).", state=item.decision)
    if actor is None or item.reviewer_id != actor.pk:
        raise NotPermitted(f"Review item #{item.pk} is not assigned to you.")
    if refusal := own_access_refusal(actor, item):
        raise NotPermitted(refusal)
    if decision not in (Decision.KEEP, Decision.REVOKE, Decision.SHORTEN):
        raise InvalidInput(f"{decision!r} is not a decision: keep, revoke or shorten.", field="decision")
    if decision == Decision.KEEP and item.restricted and not comment:
        raise InvalidInput("Say why this Restricted access is still needed.", field="comment")
    if decision == Decision.SHORTEN:
        if item.grant_id is None:
            raise InvalidInput("A role membership is kept or revoked, not shortened.", field="decision")
        if new_ends_at is None:
            raise InvalidInput("Give the new end of the access.", field="new_ends_at")
        if new_ends_at <= timezone.now():
            raise InvalidInput(
                "The new end must be in the future; to end the access now, revoke it.", field="new_ends_at"
            )
        if item.access_ends_at and new_ends_at >= item.access_ends_at:
            raise InvalidInput("Shortening moves the end earlier than it is now.", field="new_ends_at")
        if not comment:
            raise InvalidInput("Say why the access is shortened.", field="comment")


def _locked(ids: Sequence[int]) -> dict[int, ReviewItem]:
    rows = (
        ReviewItem.objects.select_for_update(of=("self",))
        .filter(pk__in=ids)
        .select_related("campaign", "subject_role")
        .order_by("pk")
    )
    return {item.pk: item for item in rows}


def review_items_decide(
    *, ids: Sequence[int], actor: Any, decision: str, comment: str = "", new_ends_at: dt.datetime | None = None
) -> list[ReviewItem]:
    """Decide many items the same way: all of them or none (the first refusal says which item)."""
    ids = list(dict.fromkeys(int(i) for i in ids))
    comment = (comment or "").strip()
    if not ids:
        raise InvalidInput("Choose at least one item.", field="ids")
    with refusal_recorded(action="review_item.decide", actor=actor, metadata={"ids": ids, "decision": decision}):
        with transaction.atomic():
            found = _locked(ids)
            for pk in ids:
                item = found.get(pk)
                if item is None:
                    raise InvalidInput(f"There is no review item #{pk}.", field="ids")
                _check(item, actor, decision, comment, new_ends_at)
            for pk in ids:
                apply_locked(
                    item=found[pk], actor=actor, decision=decision, comment=comment, new_ends_at=new_ends_at,
                    at_deadline=False,
                )  # fmt: skip
    return [found[pk] for pk in ids]


def review_item_decide(
    *, item: ReviewItem | int, actor: Any, decision: str, comment: str = "", new_ends_at: dt.datetime | None = None
) -> ReviewItem:
    pk = item if isinstance(item, int) else item.pk
    return review_items_decide(ids=[pk], actor=actor, decision=decision, comment=comment, new_ends_at=new_ends_at)[0]


def review_item_delegate(*, item: ReviewItem | int, actor: Any, to: Any, comment: str = "") -> ReviewItem:
    """Give an undecided item to another eligible reviewer (its reviewer, or a campaign manager)."""
    pk = item if isinstance(item, int) else item.pk
    with refusal_recorded(action="review_item.delegate", actor=actor, target=(ReviewItem, pk)):
        with transaction.atomic():
            locked = _locked([pk]).get(pk)
            if locked is None:
                raise InvalidInput(f"There is no review item #{pk}.", field="item")
            if locked.campaign.status != CampaignStatus.OPEN:
                raise ConflictError(f"The campaign {locked.campaign.name!r} is not open.", state=locked.campaign.status)
            if locked.decision != Decision.PENDING:
                raise ConflictError(f"Review item #{pk} was already decided.", state=locked.decision)
            if actor is None or not (locked.reviewer_id == actor.pk or may_manage_campaigns(actor)):
                raise NotPermitted(f"Review item #{pk} is not assigned to you.")
            if to is None:
                raise InvalidInput("Name the person to delegate to.", field="to")
            if to.pk == locked.reviewer_id:
                raise InvalidInput(f"{to.username} already reviews this item.", field="to")
            if refusal := eligible_refusal(to, locked):
                raise InvalidInput(refusal, field="to")
            before = locked.reviewer_id
            locked.reviewer = to
            locked.assigned_via = AssignedVia.DELEGATED
            locked.save(update_fields=["reviewer", "assigned_via"])
            audit.record(
                action="review_item.delegated",
                actor=actor,
                target=locked,
                changes={"reviewer": [before, to.pk]},
                reason=(comment or "").strip(),
                metadata={"campaign": locked.campaign_id},
            )
            notices.assigned(campaign=locked.campaign, reviewer_id=to.pk, actor=actor, item=locked.pk)
    return locked
