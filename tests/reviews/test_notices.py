"""Review notices reach the reviewers as e-mails received by a real SMTP server (tests/mail.py):
one per reviewer at the start, again on delegation, and the reminders once each."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from notifications.models import Notification
from notifications.services.delivery import notifications_deliver
from reviews.models import ReviewItem
from reviews.services.campaigns import review_campaign_start
from reviews.services.decisions import review_item_delegate
from reviews.services.reminders import review_reminders_send
from tests.reviews.conftest import World, campaign_of

pytestmark = pytest.mark.django_db


def deliver_all() -> None:
    notifications_deliver(notification_ids=list(Notification.objects.values_list("pk", flat=True)))


def received(mailbox: Any) -> dict[str, Any]:
    return {a: r for r in mailbox.received for a in r.recipients}


def test_assignment_emails_arrive_once_per_reviewer_with_the_count_and_the_link(mailbox, review_world: World, officer):
    campaign = campaign_of(officer, name="Restricted Q4", source=review_world.internal.source)
    review_campaign_start(campaign=campaign, actor=officer)
    deliver_all()
    mails = received(mailbox)
    assert sorted(mails) == ["owner@example.com", "steward@example.com"]  # not the officer, who started it
    owner_mail = mails["owner@example.com"]
    assert owner_mail.subject == "3 access items wait for your review: Restricted Q4"
    text = owner_mail.body("plain")
    assert "You were asked to re-confirm who still needs access" in text
    assert "http://portal.test/portal/reviews/inbox/" in text
    assert mails["steward@example.com"].subject == "1 access item waits for your review: Restricted Q4"
    deliver_all()  # a second pass sends nothing again
    assert len(mailbox.received) == 2
    item = ReviewItem.objects.get(campaign=campaign, grant=review_world.analyst_grant)
    review_item_delegate(item=item, actor=review_world.owner, to=review_world.steward)
    deliver_all()
    assert [r.subject for r in mailbox.received[2:]] == ["2 access items wait for your review: Restricted Q4"]


def test_reminders_arrive_before_the_deadline_and_when_overdue(mailbox, review_world: World, officer):
    campaign = review_campaign_start(
        campaign=campaign_of(officer, name="Roles", role=review_world.role, duration_days=5), actor=officer
    )
    deliver_all()
    before = len(mailbox.received)  # the assignment
    assert campaign.deadline_at is not None
    review_reminders_send(now=campaign.deadline_at - dt.timedelta(days=1))
    review_reminders_send(now=campaign.deadline_at + dt.timedelta(hours=1))
    deliver_all()
    assert sorted(r.subject for r in mailbox.received[before:]) == [
        "Review deadline near: 1 item of Roles still undecided",
        "Review overdue: 1 item of Roles still undecided",
    ]
    # The role's grant on the orders table: its dataset's owner reviews it.
    assert {a for r in mailbox.received[before:] for a in r.recipients} == {"owner@example.com"}
