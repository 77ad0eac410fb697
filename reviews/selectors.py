"""Reads of the review campaigns, already filtered to what the user may see, with their progress,
and the evidence rows (one function, for the CSV and any other rendering of the evidence pack).

Visibility: security officers, governance admins and auditors see every campaign and item; anyone
else sees the campaigns in which they review something, and in them only their own items.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery

from accounts.roles import sees_everything
from governance.models import JobAction, JobStatus, ProvisioningJob
from governance.selectors.usage import last_use_for_grants

from .models import CampaignStatus, Decision, ReviewCampaign, ReviewItem

DECIDED = ~Q(items__decision=Decision.PENDING)


def campaigns_visible_to(user: Any) -> QuerySet[ReviewCampaign]:
    """Campaigns the user may see, each with `total` and `decided` item counts (one query)."""
    qs = ReviewCampaign.objects.all()
    if not sees_everything(user):
        qs = qs.filter(pk__in=ReviewItem.objects.filter(reviewer=user).values("campaign_id"))
    return qs.select_related("source", "classification", "role", "dataset_owner").annotate(
        total=Count("items"), decided=Count("items", filter=DECIDED)
    )


def _verified_at() -> Any:
    """When the target verified the removal: the last successful revoke (grant) or membership job
    queued after the portal recorded it, as long as no later job of the subject is still to run."""
    subject = Q(grant_id=OuterRef("grant_id"), action=JobAction.REVOKE) | Q(
        membership_id=OuterRef("membership_id"), action=JobAction.MEMBERSHIP
    )
    after = ProvisioningJob.objects.filter(subject, queued_at__gte=OuterRef("revoked_at"))
    done = after.filter(status=JobStatus.SUCCEEDED).order_by("-finished_at").values("finished_at")[:1]
    return Subquery(done), Exists(after.exclude(status=JobStatus.SUCCEEDED))


def with_verification(qs: QuerySet[ReviewItem]) -> QuerySet[ReviewItem]:
    done, open_jobs = _verified_at()
    return qs.annotate(job_verified_at=done, jobs_open=open_jobs)


def revocation_verified_at(item: ReviewItem) -> dt.datetime | None:
    """For an item read through `with_verification`."""
    if item.revoked_at is None or getattr(item, "jobs_open", True):
        return None
    return getattr(item, "job_verified_at", None)


def items_of(qs: QuerySet[ReviewItem]) -> QuerySet[ReviewItem]:
    return with_verification(
        qs.select_related("campaign", "dataset__source", "subject_user", "subject_role", "reviewer", "decided_by")
    ).order_by("campaign_id", "pk")


def review_items_visible_to(user: Any) -> QuerySet[ReviewItem]:
    qs = ReviewItem.objects.all()
    if not sees_everything(user):
        qs = qs.filter(reviewer=user)
    return items_of(qs)


def review_inbox(user: Any) -> QuerySet[ReviewItem]:
    """What waits for the user's decision, in open campaigns."""
    return items_of(
        ReviewItem.objects.filter(reviewer=user, decision=Decision.PENDING, campaign__status=CampaignStatus.OPEN)
    )


@dataclass(frozen=True)
class Progress:
    reviewer: Any
    total: int
    decided: int

    @property
    def percent(self) -> int:
        return round(100 * self.decided / self.total) if self.total else 100


def campaign_progress(campaign: ReviewCampaign) -> tuple[Progress, list[Progress]]:
    """Overall and per reviewer (two queries, whatever the number of items)."""
    rows = list(
        ReviewItem.objects.filter(campaign=campaign)
        .values("reviewer_id")
        .annotate(total=Count("pk"), decided=Count("pk", filter=~Q(decision=Decision.PENDING)))
        .order_by("reviewer_id")
    )
    people = get_user_model().objects.in_bulk([r["reviewer_id"] for r in rows if r["reviewer_id"]])
    per = [Progress(people.get(r["reviewer_id"]), r["total"], r["decided"]) for r in rows]
    overall = Progress(None, sum(p.total for p in per), sum(p.decided for p in per))
    return overall, per


def review_notice_subject(*, campaign_id: int, reviewer_id: int) -> tuple[ReviewCampaign, Any, int] | None:
    """For a notification: the campaign, the reviewer and how many items still wait for them."""
    campaign = ReviewCampaign.objects.filter(pk=campaign_id, status=CampaignStatus.OPEN).first()
    reviewer = get_user_model().objects.filter(pk=reviewer_id, is_active=True).first()
    if campaign is None or reviewer is None:
        return None
    pending = ReviewItem.objects.filter(campaign=campaign, reviewer=reviewer, decision=Decision.PENDING).count()
    return (campaign, reviewer, pending) if pending else None


# --- the evidence ---------------------------------------------------------------------------------

EVIDENCE_COLUMNS = [
    "campaign", "scope", "item", "kind", "subject", "dataset", "source", "classification", "level",
    "access_started_at", "access_ends_at", "last_use", "reviewer", "assigned_via", "decision", "new_ends_at",
    "comment",
    "decided_by", "decided_at", "decided_at_deadline", "revoked_at", "revocation_verified_at",
    "campaign_closed_at", "checkpoint_seq", "checkpoint_chain_mac", "checkpoint_signature",
]  # fmt: skip


def scope_words(campaign: ReviewCampaign) -> str:
    parts = []
    if campaign.source_id:
        parts.append(f"source {campaign.source}")
    if campaign.classification_id:
        parts.append(f"classification {campaign.classification}")
    if campaign.dataset_owner_id:
        parts.append(f"datasets owned by {campaign.dataset_owner}")
    if campaign.role_id:
        parts.append(f"role {campaign.role}")
    if campaign.older_than_days:
        parts.append(f"started more than {campaign.older_than_days} days before")
    what = "grants in force" + (" and role memberships" if campaign.include_memberships else "")
    return what + (": " + "; ".join(parts) if parts else ": all")


def _iso(value: dt.datetime | None) -> str:
    return value.isoformat() if value else ""


def evidence_rows(campaign: ReviewCampaign) -> list[dict[str, Any]]:
    """Every item of the campaign as one flat row (EVIDENCE_COLUMNS), with the scope and the audit
    chain's signed checkpoint taken at the close. The CSV (and a PDF) render these rows."""
    checkpoint = campaign.close_checkpoint or {}
    scope = scope_words(campaign)
    rows = []
    items = list(items_of(ReviewItem.objects.filter(campaign=campaign)))
    uses = last_use_for_grants([item.grant_id for item in items if item.grant_id])
    for item in items:
        use = uses.get(item.grant_id) if item.grant_id else None
        subject = item.subject_user.username if item.subject_user else ""
        if item.subject_role and item.grant_id:
            subject = f"role {item.subject_role.name}"
        rows.append(
            {
                "campaign": campaign.name,
                "scope": scope,
                "item": item.pk,
                "kind": "membership" if item.membership_id else "grant",
                "subject": subject if item.grant_id else f"{subject} in role {item.subject_role}",
                "dataset": item.dataset.qualified_name if item.dataset else "",
                "source": item.dataset.source.name if item.dataset else "",
                "classification": item.classification,
                "level": item.level,
                "access_started_at": _iso(item.access_started_at),
                "access_ends_at": _iso(item.access_ends_at),
                # As the reviewer saw it when exporting (a fact of the source's statistics, not kept).
                "last_use": use.text if use is not None else "",
                "reviewer": item.reviewer.username if item.reviewer else "",
                "assigned_via": item.get_assigned_via_display(),
                "decision": item.decision,
                "new_ends_at": _iso(item.new_ends_at),
                "comment": item.comment,
                "decided_by": item.decided_by.username
                if item.decided_by
                else ("(deadline)" if item.decided_at else ""),
                "decided_at": _iso(item.decided_at),
                "decided_at_deadline": "yes" if item.decided_at_deadline else "",
                "revoked_at": _iso(item.revoked_at),
                "revocation_verified_at": _iso(revocation_verified_at(item)),
                "campaign_closed_at": _iso(campaign.closed_at),
                "checkpoint_seq": checkpoint.get("seq", ""),
                "checkpoint_chain_mac": checkpoint.get("chain_mac", ""),
                "checkpoint_signature": checkpoint.get("signature", ""),
            }
        )
    return rows


def annotate_last_reviewed(datasets: QuerySet[Any]) -> QuerySet[Any]:
    """The review facts of the compliance posture (COMPLIANCE_REVIEW_FACTS, compliance/reviews.py):
    each dataset's `last_reviewed_at`, the close of the latest closed campaign in which access to it
    was reviewed (None when none was). One subquery, whatever the catalog's size."""
    latest = (
        ReviewItem.objects.filter(dataset_id=OuterRef("pk"), campaign__status=CampaignStatus.CLOSED)
        .order_by("-campaign__closed_at")
        .values("campaign__closed_at")[:1]
    )
    return datasets.annotate(last_reviewed_at=Subquery(latest))


def campaign_items(campaign: ReviewCampaign, user: Any) -> QuerySet[ReviewItem]:
    """The items of one campaign the user may see."""
    qs = ReviewItem.objects.filter(campaign=campaign)
    if not sees_everything(user):
        qs = qs.filter(reviewer=user)
    return items_of(qs)
