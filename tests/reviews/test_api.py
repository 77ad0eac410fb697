"""The review API: a campaign made and started, items decided (one and bulk), bad input named, and
self-review refused through the API too."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from pypdf import PdfReader
from rest_framework.test import APIClient

from accounts.tokens import api_token_create
from governance.models import RoleMembership
from reviews.models import Decision, ReviewItem
from tests.reviews.conftest import World

pytestmark = pytest.mark.django_db


def api(user: Any, scopes: str = "read,request,approve,admin") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user, scopes=scopes, name='t').secret}")
    return client


def test_campaign_lifecycle_through_the_api(review_world: World, officer):
    officers = api(officer)
    response = officers.post(
        "/api/v1/reviews/campaigns/",
        {"name": "Restricted Q1", "classification": "restricted", "deadline_action": "revoke"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    pk = response.json()["id"]
    response = officers.post(f"/api/v1/reviews/campaigns/{pk}/start/", {}, format="json")
    assert response.json()["status"] == "open" and response.json()["total"] == 2
    owner = api(review_world.owner)
    mine = owner.get("/api/v1/reviews/items/").json()["results"]
    assert [i["subject_user"] for i in mine] == ["analyst"]  # the owner's own grant is the steward's
    response = owner.post(f"/api/v1/reviews/items/{mine[0]['id']}/decide/", {"decision": "keep"}, format="json")
    assert response.status_code == 400 and response.json()["error"]["field"] == "comment"
    response = owner.post(
        "/api/v1/reviews/items/decide/",
        {"decision": "revoke", "comment": "moved", "ids": [mine[0]["id"]]},
        format="json",
    )
    assert response.status_code == 200 and response.json()[0]["decision"] == "revoke"
    steward_item = ReviewItem.objects.get(campaign_id=pk, grant=review_world.owner_grant)
    api(review_world.steward).post(
        f"/api/v1/reviews/items/{steward_item.pk}/decide/",
        {"decision": "keep", "comment": "runs payroll"},
        format="json",
    )
    response = officers.post(f"/api/v1/reviews/campaigns/{pk}/close/", {}, format="json")
    assert response.status_code == 200 and response.json()["close_checkpoint"]["seq"] > 0
    pack = officers.get(f"/api/v1/reviews/campaigns/{pk}/evidence-pdf/")
    assert pack.status_code == 200 and pack["Content-Type"] == "application/pdf"
    text = " ".join(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(pack.content)).pages).split())
    assert "runs payroll" in text and str(response.json()["close_checkpoint"]["seq"]) in text
    evidence = officers.get(f"/api/v1/reviews/campaigns/{pk}/evidence/")
    rows = list(csv.DictReader(io.StringIO(evidence.content.decode())))
    assert {(r["subject"], r["decision"], r["comment"]) for r in rows} == {
        ("analyst", "revoke", "moved"),
        ("owner", "keep", "runs payroll"),
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "recurrence": "cron", "cron": "every day"}, "cron"),
        ({"name": "x", "duration_days": "14"}, "duration_days"),
        ({"name": "x", "classification": "secret"}, "classification"),
        ({"name": "x", "dataset_owner": "nobody"}, "dataset_owner"),
        ({"name": "x", "deadline_action": "ignore"}, "deadline_action"),
    ],
)
def test_bad_campaign_input_is_a_400_naming_the_field(officer, body, field, classifications):
    response = api(officer).post("/api/v1/reviews/campaigns/", body, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["field"] == field


def test_self_review_is_refused_through_the_api(review_world: World, officer):
    """The owner reviews the role's grant; once he joins the role, confirming it would confirm his
    own access: 403 naming separation of duties, and the item stays undecided."""
    campaign = (
        api(officer)
        .post("/api/v1/reviews/campaigns/", {"name": "Roles", "role": review_world.role.slug}, format="json")
        .json()
    )
    api(officer).post(f"/api/v1/reviews/campaigns/{campaign['id']}/start/", {}, format="json")
    item = ReviewItem.objects.get(campaign_id=campaign["id"])
    assert item.reviewer == review_world.owner
    RoleMembership.objects.create(role=review_world.role, user=review_world.owner)
    response = api(review_world.owner).post(
        f"/api/v1/reviews/items/{item.pk}/decide/", {"decision": "keep", "comment": "mine now"}, format="json"
    )
    assert response.status_code == 403 and "separation of duties" in response.json()["error"]["message"]
    # Nor can an officer, who sees every item, decide one assigned to someone else.
    response = api(officer).post(
        f"/api/v1/reviews/items/{item.pk}/decide/", {"decision": "revoke", "comment": "x"}, format="json"
    )
    assert response.status_code == 403
    item.refresh_from_db()
    assert item.decision == Decision.PENDING
