"""The workbench: campaigns created through the service, progress shown, items decided only by
their reviewer (separation of duties holds in the admin too)."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.test import Client
from django.urls import reverse

from accounts.roles import SECURITY_OFFICERS
from audit.models import AuditEvent
from reviews.models import Decision, ReviewCampaign, ReviewItem
from reviews.services.campaigns import review_campaign_start
from tests.reviews.conftest import World, campaign_of, make_grant

pytestmark = pytest.mark.django_db


def test_an_officer_creates_a_campaign_in_the_admin_through_the_service(officer, review_world: World):
    client = Client()
    client.force_login(officer)
    response = client.post(
        reverse("admin:reviews_reviewcampaign_add"),
        {
            "name": "Quarterly Restricted",
            "classification": review_world.restricted.classification.pk,
            "recurrence": "quarterly",
            "cron": "",
            "duration_days": 14,
            "remind_days_before": 3,
            "deadline_action": "escalate",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    campaign = ReviewCampaign.objects.get(name="Quarterly Restricted")
    assert campaign.cron == "0 6 1 1,4,7,10 *" and campaign.created_by == officer
    assert AuditEvent.objects.filter(action="review_campaign.created", actor=officer).exists()
    listing = client.get(reverse("admin:reviews_reviewcampaign_changelist")).content.decode()
    assert "Quarterly Restricted" in listing and "no items" in listing


def test_self_review_is_refused_in_the_admin(officer, make_user, review_world: World):
    """Another officer reviews the officer's own grant (no owner, no steward on that dataset): the
    officer's admin action on it is refused and nothing is decided."""
    second = make_user("officer2", SECURITY_OFFICERS)
    ds = review_world.restricted
    ds.owner = None
    ds.save()
    from guardian.shortcuts import remove_perm

    for person in (review_world.owner, review_world.steward):
        remove_perm("steward_dataset", person, ds)
    own = make_grant(ds, user=officer)
    campaign = review_campaign_start(campaign=campaign_of(second, classification=ds.classification), actor=second)
    item = ReviewItem.objects.get(campaign=campaign, grant=own)
    assert item.reviewer == second
    client = Client()
    client.force_login(officer)
    url = reverse("admin:reviews_reviewitem_changelist")
    response = client.post(url, {"action": "keep", ACTION_CHECKBOX_NAME: [item.pk]}, follow=True)
    assert "is not assigned to you" in response.content.decode()
    item.refresh_from_db()
    assert item.decision == Decision.PENDING
    # The reviewer decides through the same action; the progress shows it.
    reviewer = Client()
    reviewer.force_login(second)
    response = reviewer.post(url, {"action": "keep", ACTION_CHECKBOX_NAME: [item.pk]}, follow=True)
    assert "Keep: 1 item(s)." in response.content.decode()
    page = reviewer.get(reverse("admin:reviews_reviewcampaign_changelist")).content.decode()
    assert 'aria-label="1 of 3 decided"></progress> 1 of 3' in page  # the officer's, the analyst's, the owner's
