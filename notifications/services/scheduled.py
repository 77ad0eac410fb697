"""What beat announces on its own: accesses about to end (7 days and 1 day before), and the daily
digest of what people chose to receive once a day (or that was too much for one day: an approver
sent NOTIFICATIONS_DIGEST_AFTER requests in 24 hours gets the rest in the digest)."""

from __future__ import annotations

import datetime as dt
import functools

from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from audit import services as audit
from governance.models import Grant

from .. import publishing
from ..models import Delivery, DeliveryStatus, Kind, Notification
from ..selectors import held_recipients
from .outbox import notify

# Each warning is sent when the access has that much left, if it had it at all: a grant of three
# days is warned the day before its end, not "in 7 days" the moment it starts.
WARNINGS = (7, 1)


def _key(grant_id: int, days: int, ends_at: dt.datetime) -> str:
    return f"access_ending:{grant_id}:{days}:{ends_at.isoformat()}"


def grant_ends_announce(*, now: dt.datetime | None = None) -> int:
    """Beat (NOTIFICATIONS_ENDING_INTERVAL_SECONDS): warn the holders of accesses ending within 7 days
    and within 1 day, each warning once per end (an end moved later is warned again). Each warning
    is audited (`grant.end_announced`) in the transaction that writes its notification."""
    now = now or timezone.now()
    announced = 0
    for i, days in enumerate(WARNINGS):
        lead = dt.timedelta(days=days)
        closer = dt.timedelta(days=WARNINGS[i + 1]) if i + 1 < len(WARNINGS) else dt.timedelta(0)
        due = list(
            Grant.objects.active(now)
            .filter(ends_at__lte=now + lead, ends_at__gt=now + closer)
            .values_list("pk", "starts_at", "ends_at", "dataset__schema", "dataset__name")
        )
        keys = {pk: _key(pk, days, ends_at) for pk, _, ends_at, _, _ in due}
        done = set(Notification.objects.filter(dedup_key__in=keys.values()).values_list("dedup_key", flat=True))
        for pk, starts_at, ends_at, schema, name in due:
            if keys[pk] in done or ends_at - starts_at <= lead:
                continue
            with transaction.atomic():
                if notify(Kind.ACCESS_ENDING, dedup_key=keys[pk], grant=pk, days=days) is None:
                    continue  # another run announced it a moment ago
                audit.record(
                    action="grant.end_announced",
                    actor=None,
                    target_type="governance.grant",
                    target_id=pk,
                    target_repr=f"{schema}.{name}",
                    metadata={"days": days, "ends_at": ends_at},
                )
            announced += 1
    return announced


def digests_send(*, now: dt.datetime | None = None) -> int:
    """Beat, daily at NOTIFICATIONS_DIGEST_HOUR: one message per person and channel with everything
    held for them, in one transaction each (the held rows are locked, so two runs never send one
    item twice). Returns the number of digests made."""
    now = now or timezone.now()
    made = 0
    for recipient_id, channel in held_recipients():
        with transaction.atomic():
            items = list(
                Delivery.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("recipient")
                .filter(status=DeliveryStatus.HELD, recipient_id=recipient_id, channel=channel)
                .order_by("pk")
            )
            if not items:
                continue
            recipient = items[0].recipient
            n = Notification.objects.create(kind=Kind.DIGEST, context={"items": [d.pk for d in items]}, prepared_at=now)
            subject = f"Your daily summary: {len(items)} notification{'s' if len(items) != 1 else ''}"
            context = {"recipient": recipient, "items": items, "subject": subject, "day": now.date()}
            digest = Delivery.objects.create(
                notification=n,
                kind=Kind.DIGEST,
                recipient=recipient,
                channel=channel,
                address=items[-1].address,  # the channel's address (email, or Slack)
                subject=subject,
                body_text=render_to_string("notifications/digest.txt", context).strip() + "\n",
                body_html=render_to_string("notifications/digest.html", context),
            )
            Delivery.objects.filter(pk__in=[d.pk for d in items]).update(status=DeliveryStatus.DIGESTED, digest=digest)
            transaction.on_commit(functools.partial(publishing.deliver, [n.pk]))
        made += 1
    return made
