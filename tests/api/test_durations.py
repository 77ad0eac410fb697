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
    # Revoking Restricted data ends the grantee's open sessions (migration 0023); the others: off.
    assert restricted["terminate_sessions_on_revoke"] is True
    assert not any(r["terminate_sessions_on_revoke"] for r in rows if r["slug"] != "restricted")


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


def test_a_naive_end_is_a_400_naming_ends_at(world: World, api: Callable[..., Any]) -> None:
    grant = world.granted
    naive = (grant.ends_at - dt.timedelta(days=1)).replace(tzinfo=None).isoformat()
    response = api(world.users["analyst"]).post(
        f"/api/v1/grants/{grant.pk}/end/", {"ends_at": naive, "reason": "x"}, format="json"
    )
    assert response.status_code == 400 and error(response)["field"] == "ends_at"
    assert "time zone" in error(response)["message"]
    grant.refresh_from_db()
    assert grant.ends_at == world.granted.ends_at


def test_extending_follows_the_approval_rules_of_today(world: World, api: Callable[..., Any]) -> None:
    """Lengthening is an approval of more time: the policy's last stage, separation of duties."""
    from governance.models import Grant, Role, RoleMembership
    from governance.services.requests import access_request_approve, access_request_submit

    analyst, owner, officer = world.users["analyst"], world.users["owner"], world.users["officer"]
    other_owner = world.users["other_owner"]
    # A role grant on `payments`, approved by its owner, who then joins the role: more time for the
    # role would reach them, so they cannot give it, although they could approve such a request.
    role = Role.objects.get(slug="finance-analysts")
    req = access_request_submit(
        requester=owner,
        dataset=world.other,
        justification="month end",
        duration=dt.timedelta(days=7),
        grantee_role=role,
    )
    access_request_approve(access_request=req, approver=other_owner)
    role_grant = Grant.objects.get(source_request=req)
    RoleMembership.objects.create(role=role, user=other_owner, added_by=owner)
    later = (role_grant.ends_at + dt.timedelta(days=1)).isoformat()
    url = f"/api/v1/grants/{role_grant.pk}/end/"
    refused = api(other_owner).post(url, {"ends_at": later, "reason": "more"}, format="json")
    assert refused.status_code == 403 and "separation of duties" in error(refused)["message"]

    # Restricted data needs the security officer's stage: its owner alone cannot add time.
    req = access_request_submit(
        requester=analyst, dataset=world.employees, justification="review", duration=dt.timedelta(days=2)
    )
    access_request_approve(access_request=req, approver=owner)
    access_request_approve(access_request=req, approver=officer)
    restricted_grant = Grant.objects.get(source_request=req)
    url = f"/api/v1/grants/{restricted_grant.pk}/end/"
    later = (restricted_grant.ends_at + dt.timedelta(days=1)).isoformat()
    refused = api(owner).post(url, {"ends_at": later, "reason": "more"}, format="json")
    assert refused.status_code == 403 and "security officer" in error(refused)["message"]
    restricted_grant.refresh_from_db()
    assert restricted_grant.ends_at.isoformat() != later
    allowed = api(officer).post(url, {"ends_at": later, "reason": "more"}, format="json")
    assert allowed.status_code == 200, allowed.content


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


def test_a_shortest_duration_raised_while_a_request_waits_refuses_its_approval(world: World) -> None:
    from governance.errors import ConflictError
    from governance.services.requests import access_request_approve

    internal = world.ledger.classification
    internal.min_duration = dt.timedelta(days=10)  # the pending request asked for 7 days
    internal.save(update_fields=["min_duration"])
    with pytest.raises(ConflictError, match="needs at least 10 days"):
        access_request_approve(access_request=world.pending, approver=world.users["owner"])
    world.pending.refresh_from_db()
    assert world.pending.state == "pending"


def test_form_ids_ignore_non_ascii_digits_and_duplicates() -> None:
    from governance.views.inbox import parse_ids

    assert parse_ids(["3", "²", "3", "٣", "x", "0", "9" * 40, "1"]) == [3, 1]
