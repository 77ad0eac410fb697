"""The review notifications (notifications app outbox), written in the transaction of the event.

Dedup keys make every scheduled reminder once-only, whatever the number of beat runs:
- assigned: once per (campaign, reviewer) at the start; once per item delegated or escalated;
- due soon: once per (campaign, reviewer);
- overdue: once per (campaign, reviewer, day).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from notifications.models import Kind
from notifications.services.outbox import notify

from ..models import ReviewCampaign


def assigned(
    *, campaign: ReviewCampaign, reviewer_id: int, actor: Any, item: int | None = None, escalated: bool = False
) -> int | None:
    key = f"review_assigned:{campaign.pk}:{reviewer_id}" + (f":{item}" if item else "") + (":esc" if escalated else "")
    return notify(
        Kind.REVIEW_ASSIGNED,
        actor=actor,
        dedup_key=key,
        campaign=campaign.pk,
        reviewer=reviewer_id,
        escalated=escalated,
    )


def due_soon(*, campaign: ReviewCampaign, reviewer_id: int) -> int | None:
    return notify(
        Kind.REVIEW_DUE,
        dedup_key=f"review_due:{campaign.pk}:{reviewer_id}",
        campaign=campaign.pk,
        reviewer=reviewer_id,
    )


def overdue(*, campaign: ReviewCampaign, reviewer_id: int, day: dt.date) -> int | None:
    return notify(
        Kind.REVIEW_OVERDUE,
        dedup_key=f"review_overdue:{campaign.pk}:{reviewer_id}:{day.isoformat()}",
        campaign=campaign.pk,
        reviewer=reviewer_id,
    )
