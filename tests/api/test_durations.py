"""Durations in hours or days through the API and the portal form, said in words; moving a grant's end."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from governance import durations
from governance.models import AccessRequest, Classification
from tests.api.conftest import World, error

pytestmark = pytest.mark.django_db
URL = "/api/v1/access-requests/"


def test_words() -> None:
    assert durations.words(dt.timedelta(hours=6)) == "6 hours"
    assert durations.words(dt.timedelta(days=14)) == "14 days"
    assert durations.words(dt.timedelta(days=1, hours=6)) == "1 day 6 hours"
    assert durations.words(dt.timedelta(seconds=90)) == "1 minute 30 seconds"
    assert durations.split(dt.timedelta(days=3)) == (3, "days")
    assert durations.split(dt.timedelta(hours=30)) == (30, "hours")


def test_duration_in_hours_is_recorded_and_said_in_words(world: World, api: Callable[..., Any]) -> None:
    body = {"dataset": world.ledger.pk, "level": "write", "duration_hours": 6, "justification": "hotfix"}
    response = api(world.users["analyst"]).post(URL, body, format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["duration_hours"] == 6 and data["duration"] == "6 hours" and data["duration_days"] == 0.25
    assert AccessRequest.objects.get(pk=data["id"]).duration == dt.timedelta(hours=6)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"duration_days": 2, "duration_hours": 6}, "duration_hours", "not both"),
        ({}, "duration_days", "duration_hours"),
        ({"duration_hours": 0}, "duration_hours", "greater than or equal to 1"),
    ],
)
def test_both_none_or_bad_hours_is_a_400_naming_the_field(
    world: World, api: Callable[..., Any], body: dict[str, Any], field: str, words: str
) -> None:
    before = AccessRequest.objects.count()
    full = {"dataset": world.ledger.pk, "level": "write", "justification": "x", **body}
    response = api(world.users["analyst"]).post(URL, full, format="json")
    assert response.status_code == 400
    err = error(response)
    assert err["field"] == field and words in err["fields"][field][0]
    assert AccessRequest.objects.count() == before


def test_out_of_policy_hours_name_the_field_and_the_limit_in_words(world: World, api: Callable[..., Any]) -> None:
    Classification.objects.filter(slug="restricted").update(min_duration=dt.timedelta(hours=4))
    client = api(world.users["analyst"])
    body = {"dataset": world.employees.pk, "justification": "review"}
    too_long = error(client.post(URL, {**body, "duration_hours": 31 * 24}, format="json"))
    assert too_long["code"] == "policy_violation" and too_long["field"] == "duration_hours"
    assert "at most 30 days" in too_long["message"] and "you asked for 31 days" in too_long["message"]
    too_short = error(client.post(URL, {**body, "duration_hours": 2}, format="json"))
    assert too_short["field"] == "duration_hours" and "at least 4 hours" in too_short["message"]
    days = error(client.post(URL, {**body, "duration_days": 45}, format="json"))
    assert days["field"] == "duration_days"  # the old field keeps working, and is named


def test_classifications_show_both_bounds(world: World, api: Callable[..., Any]) -> None:
    rows = api(world.users["analyst"]).get("/api/v1/classifications/").json()
    rows = rows["results"] if isinstance(rows, dict) else rows
    restricted = next(r for r in rows if r["slug"] == "restricted")
    assert restricted["max_duration_days"] == 30 and restricted["max_duration_hours"] == 720
    assert restricted["min_duration"] == "1 hour" and restricted["max_duration"] == "30 days"


def test_moving_a_grant_end_through_the_api(world: World, api: Callable[..., Any]) -> None:
    grant = world.granted  # analyst's, on a dataset other_owner owns (internal: at most 180 days)
    url = f"/api/v1/grants/{grant.pk}/end/"
    sooner = (grant.ends_at - dt.timedelta(days=2)).isoformat()
    response = api(world.users["analyst"]).post(url, {"ends_at": sooner, "reason": "done"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["ends_at"].startswith(sooner[:19])
    event = AuditEvent.objects.get(action="grant.end_moved")
    assert event.actor == world.users["analyst"] and event.metadata["moved"] == "2 days earlier"

    later = (grant.ends_at + dt.timedelta(days=30)).isoformat()
    refused = api(world.users["analyst"]).post(url, {"ends_at": later, "reason": "more"}, format="json")
    assert refused.status_code == 403  # the grantee cannot extend their own access
    too_far = (grant.starts_at + dt.timedelta(days=181)).isoformat()
    response = api(world.users["other_owner"]).post(url, {"ends_at": too_far, "reason": "more"}, format="json")
    assert response.status_code == 400 and error(response)["field"] == "ends_at"
    assert "at most 180 days" in error(response)["message"]
    past = (timezone.now() - dt.timedelta(hours=1)).isoformat()
    response = api(world.users["other_owner"]).post(url, {"ends_at": past, "reason": "x"}, format="json")
    assert response.status_code == 400 and error(response)["field"] == "ends_at"


def test_portal_form_asks_in_hours_or_days(world: World) -> None:
    client = Client()
    client.force_login(world.users["analyst"])
    url = reverse("portal:request", args=[world.ledger.pk])
    page = client.get(url).content.decode()
    assert "at most <strong>180 days</strong> (at least 1 hour)" in page
    assert 'name="duration_unit"' in page
    data = {"dataset": world.ledger.pk, "level": "write", "duration": 6, "duration_unit": "hours", "justification": "x"}
    response = client.post(url, data)
    assert response.status_code == 302
    req = AccessRequest.objects.get(level="write", dataset=world.ledger)
    assert req.duration == dt.timedelta(hours=6) and req.duration_text == "6 hours"
    response = client.post(url, {**data, "level": "admin", "duration": 200, "duration_unit": "days"})
    assert response.status_code == 200
    assert "at most 180 days" in response.context["form"].errors["duration"][0]
