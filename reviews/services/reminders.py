"""Reminders (beat, hourly): N days before a campaign's deadline, and every day once it passed, each
reviewer with undecided items hears of them once (the dedup keys of `notices`)."""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.utils import timezone

from ..models import CampaignStatus, Decision, ReviewCampaign, ReviewItem
from . import notices


def review_reminders_send(*, now: dt.datetime | None = None) -> int:
    """Record the reminders that are due; returns how many were new (0 on a re-run)."""
    now = now or timezone.now()
    sent = 0
    campaigns = ReviewCampaign.objects.filter(status=CampaignStatus.OPEN, deadline_at__isnull=False)
    for campaign in campaigns:
        assert campaign.deadline_at is not None
        overdue = campaign.deadline_at <= now
        due_soon = not overdue and campaign.deadline_at - dt.timedelta(days=campaign.remind_days_before) <= now
        if not (overdue or due_soon):
            continue
        reviewers = (
            ReviewItem.objects.filter(campaign=campaign, decision=Decision.PENDING, reviewer__isnull=False)
            .values_list("reviewer_id", flat=True)
            .distinct()
            .order_by("reviewer_id")
        )
        with transaction.atomic():
            for reviewer_id in reviewers:
                if overdue:
                    pk = notices.overdue(campaign=campaign, reviewer_id=reviewer_id, day=now.date())
                else:
                    pk = notices.due_soon(campaign=campaign, reviewer_id=reviewer_id)
                sent += pk is not None
    return sent
