"""The review pages: what a reviewer and an officer see, decisions from the inbox (one and bulk),
refusals shown, self-review impossible, the evidence CSV, and query counts that do not grow."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from pypdf import PdfReader

from governance.models import Grant, GrantUsage, SourceUsage
from reviews.models import Decision, ReviewItem
from reviews.services.campaigns import review_campaign_start
from tests.reviews.conftest import World, campaign_of, make_grant

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def started(review_world: World, officer):
    campaign = campaign_of(officer, source=review_world.internal.source, include_memberships=True)
    return review_campaign_start(campaign=campaign, actor=officer)


def test_the_owner_decides_from_the_inbox_and_sees_it_on_the_campaign(review_world: World, started):
    owner = client_for(review_world.owner)
    page = owner.get(reverse("reviews:inbox")).content.decode()
    assert "salaries" in page and "orders" in page
    item = ReviewItem.objects.get(campaign=started, grant=review_world.analyst_grant)
    response = owner.post(reverse("reviews:item_decide", args=[item.pk]), {"decision": "keep"}, follow=True)
    assert "Say why this Restricted access is still needed." in response.content.decode()
    response = owner.post(
        reverse("reviews:item_decide", args=[item.pk]), {"decision": "keep", "comment": "payroll"}, follow=True
    )
    assert "Keep: read on" in response.content.decode()
    item.refresh_from_db()
    assert item.decision == Decision.KEEP and item.comment == "payroll"
    detail = client_for(started.created_by).get(reverse("reviews:campaign", args=[started.pk])).content.decode()
    assert "“payroll”" in detail and "progress" in detail


def test_bulk_revoke_from_the_inbox(review_world: World, started):
    owner = client_for(review_world.owner)
    ids = list(
        ReviewItem.objects.filter(campaign=started, reviewer=review_world.owner, grant__isnull=False)
        .exclude(grant=review_world.analyst_grant)
        .values_list("pk", flat=True)
    )
    response = owner.post(
        reverse("reviews:items_decide"), {"ids": ids, "decision": "revoke", "comment": "x"}, follow=True
    )
    assert f"Revoke: {len(ids)} items." in response.content.decode()
    assert Grant.objects.get(pk=review_world.young_grant.pk).revoked_at is not None


def test_self_review_is_refused_in_the_portal(review_world: World, started):
    """The steward reviews the owner's grant; the owner posting a decision on it is refused, and so is
    delegating it to the owner himself."""
    item = ReviewItem.objects.get(campaign=started, grant=review_world.owner_grant)
    owner = client_for(review_world.owner)
    response = owner.post(
        reverse("reviews:item_decide", args=[item.pk]), {"decision": "keep", "comment": "mine"}, follow=True
    )
    assert "is not assigned to you" in response.content.decode()
    steward = client_for(review_world.steward)
    response = steward.post(reverse("reviews:item_delegate", args=[item.pk]), {"to": "owner"}, follow=True)
    assert "separation of duties" in response.content.decode()
    item.refresh_from_db()
    assert item.decision == Decision.PENDING and item.reviewer == review_world.steward


def test_others_do_not_see_the_campaign_and_evidence_is_for_officers(review_world: World, started, analyst):
    assert client_for(analyst).get(reverse("reviews:campaign", args=[started.pk])).status_code == 404
    assert (
        client_for(review_world.owner).get(reverse("reviews:campaign_evidence", args=[started.pk])).status_code == 403
    )
    response = client_for(started.created_by).get(reverse("reviews:campaign_evidence", args=[started.pk]))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert {r["subject"] for r in rows} >= {"analyst", "owner", "role Finance analysts"}
    # The evidence pack as PDF: the same rows, read back from the document's text.
    url = reverse("reviews:campaign_evidence_pdf", args=[started.pk])
    assert client_for(review_world.owner).get(url).status_code == 403
    response = client_for(started.created_by).get(url)
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    text = " ".join(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages).split())
    assert f"Access review evidence: {started.name}" in text
    assert all(subject in text for subject in ("analyst", "owner", "role Finance analysts"))
    assert "not closed: no checkpoint yet" in text


def test_a_bad_id_or_decision_is_a_message_never_a_500(review_world: World, started):
    owner = client_for(review_world.owner)
    response = owner.post(reverse("reviews:items_decide"), {"ids": ["x", "-1"], "decision": "keep"}, follow=True)
    assert "Choose at least one item." in response.content.decode()
    item = ReviewItem.objects.filter(campaign=started, reviewer=review_world.owner).first()
    assert item is not None
    response = owner.post(reverse("reviews:item_decide", args=[item.pk]), {"decision": "maybe"}, follow=True)
    assert response.status_code == 200 and "decision:" in response.content.decode()


def _count(client: Client, url: str) -> int:
    client.get(url)
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


def test_campaign_and_inbox_query_counts_are_pinned_and_do_not_grow(review_world: World, officer, make_dataset):
    def grow(n: int) -> None:
        for i in range(n):
            ds = make_dataset(f"t{ReviewItem.objects.count()}_{i}", owner=review_world.owner)
            make_grant(ds, user=review_world.analyst)

    owner = client_for(review_world.owner)
    grow(2)
    small = review_campaign_start(campaign=campaign_of(officer, name="small"), actor=officer)
    inbox_few = _count(owner, reverse("reviews:inbox"))
    grow(20)
    large = review_campaign_start(campaign=campaign_of(officer, name="large"), actor=officer)
    assert large.items.count() > small.items.count() + 15
    for who in (officer, review_world.owner):
        client = client_for(who)
        few = _count(client, reverse("reviews:campaign", args=[small.pk]))
        many = _count(client, reverse("reviews:campaign", args=[large.pk]))
        assert few == many, f"campaign page for {who}: {few} queries with few items, {many} with many"
    # 6: the page's last-use facts are one query, whatever the number of items on it.
    assert _count(owner, reverse("reviews:inbox")) == inbox_few == 6
    assert _count(owner, reverse("reviews:campaign", args=[large.pk])) == 8
    assert _count(owner, reverse("reviews:campaigns")) == 5


def test_the_inbox_shows_when_each_grant_was_last_used_and_flags_the_unused(review_world: World, started):
    """The reviewer decides with the facts: a grant used yesterday says so; one the source has
    watched for a year without seeing use is flagged, with revoke suggested."""
    now = timezone.now()
    source = review_world.analyst_grant.dataset.source
    SourceUsage.objects.update_or_create(
        source=source, defaults={"can_tell": True, "observed_since": now - dt.timedelta(days=365)}
    )
    GrantUsage.objects.create(
        grant=review_world.analyst_grant, last_used_at=now - dt.timedelta(days=1), used_as="gov_u_analyst"
    )
    Grant.objects.filter(pk=review_world.young_grant.pk).update(starts_at=now - dt.timedelta(days=200))
    page = client_for(review_world.owner).get(reverse("reviews:inbox")).content.decode()
    items = {i.grant_id: i.pk for i in ReviewItem.objects.filter(campaign=started, reviewer=review_world.owner)}
    used = page.split(f'id="item-{items[review_world.analyst_grant.pk]}"')[1].split("</tr>")[0]
    assert "Last used " + f"{timezone.localtime(now - dt.timedelta(days=1)):%Y-%m-%d}" in used
    assert "consider revoking" not in used
    unused = page.split(f'id="item-{items[review_world.young_grant.pk]}"')[1].split("</tr>")[0]
    assert "No use seen since" in unused and "consider revoking it" in unused
