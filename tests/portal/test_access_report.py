"""The effective access report (page, CSV, API) and the last use shown where grants are shown.

What a source's readings found is arranged as rows here (the readings themselves run against a
real target in tests/provisioning/test_usage.py); what is asserted is what people see."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from governance.models import Dataset, DataSource, Grant, GrantUsage, Role, RoleMembership, SourceUsage
from governance.services.requests import access_request_approve, access_request_submit

pytestmark = pytest.mark.django_db
DAY = dt.timedelta(days=1)
FLAG = "Unused for 90 days or more: consider revoking it."


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def granted(requester: User, approver: User, dataset: Dataset, **kw: Any) -> Grant:
    req = access_request_submit(requester=requester, dataset=dataset, justification="close", duration=7 * DAY, **kw)
    access_request_approve(access_request=req, approver=approver)
    return Grant.objects.get(source_request=req)


def aged(grant: Grant, days: int) -> None:
    Grant.objects.filter(pk=grant.pk).update(starts_at=timezone.now() - dt.timedelta(days=days))


@pytest.fixture
def scene(
    source: DataSource, make_dataset: Callable[..., Dataset], analyst: User, owner: User, other_owner: User
) -> dict[str, Any]:
    """ledger (owner's): analyst's grant, used yesterday; payments (other_owner's): analyst's grant,
    never seen used in 120 days; a portal Role's grant on ledger with two members."""
    ledger = make_dataset("ledger", schema="finance", owner=owner)
    payments = make_dataset("payments", schema="finance", owner=other_owner)
    used = granted(analyst, owner, ledger)
    unused = granted(analyst, other_owner, payments)
    role = Role.objects.create(name="Finance analysts", slug="finance-analysts")
    RoleMembership.objects.create(role=role, user=analyst, added_by=owner)
    RoleMembership.objects.create(role=role, user=other_owner, added_by=owner)
    via_role = granted(analyst, owner, ledger, grantee_role=role)
    for grant in (used, unused, via_role):
        aged(grant, 120)
    watching = timezone.now() - dt.timedelta(days=120)
    SourceUsage.objects.create(source=source, can_tell=True, observed_since=watching, last_read_at=timezone.now())
    GrantUsage.objects.create(grant=used, last_used_at=timezone.now() - DAY, used_as="gov_j_analyst_7")
    return {"ledger": ledger, "payments": payments, "used": used, "unused": unused, "via_role": via_role}


def test_the_report_shows_who_holds_what_with_last_use_and_flags_the_unused(
    scene: dict[str, Any], officer: User, source: DataSource
) -> None:
    body = signed_in(officer).get("/portal/access/?source=warehouse").content.decode()
    assert "Effective access on warehouse" in body
    assert f"Use watched since {timezone.localtime(timezone.now() - dt.timedelta(days=120)):%Y-%m-%d}" in body
    assert body.count("role Finance analysts") == 2  # one row per member of the role
    assert "Last used " in body and "No use seen since" in body
    assert body.count(FLAG) == 3  # the never-used grant, and the role's (its members' use is its own)
    assert f'href="/portal/grants/{scene["unused"].pk}/end/"' in body

    response: Any = signed_in(officer).get("/portal/access/?source=warehouse&format=csv")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 4
    by = {(r["dataset"], r["person"], r["via"]): r for r in rows}
    used = by[("finance.ledger", "analyst", "direct")]
    assert used["used_as"] == "gov_j_analyst_7" and used["flagged_unused"] == "no" and used["last_used_at"]
    unused = by[("finance.payments", "analyst", "direct")]
    assert unused["flagged_unused"] == "yes" and unused["last_use"].startswith("No use seen since")
    assert by[("finance.ledger", "other_owner", "role Finance analysts")]["grant"] == str(scene["via_role"].pk)


def test_a_source_that_cannot_tell_says_so_and_flags_nothing(
    scene: dict[str, Any], auditor: User, source: DataSource
) -> None:
    SourceUsage.objects.filter(source=source).update(
        can_tell=False,
        observed_since=None,
        reason="the pg_stat_statements extension is not installed in database warehouse.",
    )
    body = signed_in(auditor).get("/portal/access/").content.decode()
    assert "This source cannot tell when access was last used:</strong> the pg_stat_statements extension" in body
    assert "Cannot tell: the pg_stat_statements extension is not installed" in body
    assert FLAG not in body
    SourceUsage.objects.filter(source=source).delete()
    body = signed_in(auditor).get("/portal/access/").content.decode()
    assert "the source&#x27;s use has not been read yet" in body


def test_a_gap_in_observation_flags_nothing_until_the_source_has_watched_90_days_again(
    scene: dict[str, Any], source: DataSource
) -> None:
    from governance.selectors.usage import last_use_for_grants

    used, unused = scene["used"], scene["unused"]
    GrantUsage.objects.filter(grant=used).update(last_used_at=timezone.now() - dt.timedelta(days=100))
    assert all(f.flagged for f in last_use_for_grants([used.pk, unused.pk]).values())
    # The counters were reset 10 days ago: a use in between could have been missed.
    SourceUsage.objects.filter(source=source).update(observed_since=timezone.now() - dt.timedelta(days=10))
    facts = last_use_for_grants([used.pk, unused.pk])
    assert not any(f.flagged for f in facts.values())
    assert facts[used.pk].text.startswith("Last used ")
    # A source that cannot tell now flags nothing, not even a use seen long ago.
    SourceUsage.objects.filter(source=source).update(can_tell=False, observed_since=None, reason="gone")
    facts = last_use_for_grants([used.pk, unused.pk])
    assert not any(f.flagged for f in facts.values()) and facts[unused.pk].text == "Cannot tell: gone"


def test_owners_see_their_datasets_only_and_others_are_refused(
    scene: dict[str, Any], owner: User, other_owner: User, make_user: Callable[..., User]
) -> None:
    body = signed_in(owner).get("/portal/access/?source=warehouse").content.decode()
    assert "finance.ledger" in body and "finance.payments" not in body
    body = signed_in(other_owner).get("/portal/access/?source=warehouse").content.decode()
    assert "finance.payments" in body and "finance.ledger" not in body
    nobody = make_user("nobody")
    assert signed_in(nobody).get("/portal/access/").status_code == 403
    assert signed_in(owner).get("/portal/access/?source=elsewhere").status_code == 404


def test_the_grant_pages_show_last_use_and_suggest_revoking_the_unused(
    scene: dict[str, Any], analyst: User, other_owner: User, superuser: User
) -> None:
    mine = signed_in(analyst).get("/portal/grants/").content.decode()
    assert "Last used " in mine and FLAG in mine
    dataset = signed_in(other_owner).get(f"/portal/datasets/{scene['payments'].pk}/").content.decode()
    assert "No use seen since" in dataset and FLAG in dataset
    admin = signed_in(superuser).get(f"/admin/governance/grant/{scene['unused'].pk}/change/").content.decode()
    assert "No use seen since" in admin and FLAG in admin
    listing = signed_in(superuser).get("/admin/governance/grant/").content.decode()
    assert listing.count(FLAG) == 2 and "Last used " in listing


def test_the_api_reports_the_same_rows(scene: dict[str, Any], officer: User) -> None:
    client = signed_in(officer)
    body = client.get("/api/v1/effective-access/?source=warehouse").json()
    assert body["count"] == 3  # grants; the role's has a row per member
    rows = body["results"]
    assert len(rows) == 4
    unused = next(r for r in rows if r["grant"] == scene["unused"].pk)
    assert unused["last_use"]["state"] == "not_seen" and unused["last_use"]["flagged_unused"] is True
    assert unused["person"] == "analyst" and unused["via"] == "direct" and unused["dataset_name"] == "finance.payments"
    error = client.get("/api/v1/effective-access/").json()["error"]
    assert error["field"] == "source"


def _count(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response: Any = client.get(url)
        assert response.status_code == 200
        if hasattr(response, "streaming_content"):
            b"".join(response.streaming_content)
    return len(ctx)


def test_report_query_counts_do_not_grow_with_rows(
    scene: dict[str, Any],
    officer: User,
    owner: User,
    analyst: User,
    make_user: Callable[..., User],
    make_dataset: Callable[..., Dataset],
) -> None:
    urls = ["/portal/access/?source=warehouse", "/portal/access/?source=warehouse&format=csv"]
    api = "/api/v1/effective-access/?source=warehouse"
    clients = {"officer": signed_in(officer), "owner": signed_in(owner)}
    for client in clients.values():  # the content-type cache fills once per process, not per row
        _count(client, urls[0])
    before = {(who, url): _count(c, url) for who, c in clients.items() for url in [*urls, api]}
    role = Role.objects.get(slug="finance-analysts")
    for i in range(6):
        person = make_user(f"member_{i}")
        RoleMembership.objects.create(role=role, user=person, added_by=owner)
        more = make_dataset(f"more_{i}", schema="finance", owner=owner)
        grant = granted(analyst, owner, more)
        GrantUsage.objects.create(grant=grant, last_used_at=timezone.now(), used_as="x")
        granted(person, owner, more, grantee_role=role)
    after = {(who, url): _count(c, url) for who, c in clients.items() for url in [*urls, api]}
    assert after == before
    # Session, user, groups; the sources (with their state); the page's count, its grants (with
    # their last use and their source's state), the members of its Roles. An owner adds the check
    # that they decide on a dataset of the source. The CSV has no count; the API checks that the
    # caller may see some source before it looks the named one up.
    assert before == {
        ("officer", urls[0]): 7,
        ("officer", urls[1]): 6,
        ("officer", api): 8,
        ("owner", urls[0]): 8,
        ("owner", urls[1]): 7,
        ("owner", api): 9,
    }


@pytest.mark.django_db(transaction=True)
def test_the_report_in_a_browser(
    browser: Any, live_server: Any, scene: dict[str, Any], officer: User, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    from tests.portal.test_pages_in_browser import signed_in as browser_signed_in

    shots = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    page = browser_signed_in(browser, live_server.url, "officer", width=1500)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Access report").click()
    expect(page.get_by_role("heading", name="Effective access on warehouse")).to_be_visible()
    expect(page.locator("tr.flagged")).to_have_count(3)
    expect(page.locator("tr.flagged").first).to_contain_text(FLAG)
    page.screenshot(path=str(shots / "portal-access-report.png"), full_page=True)
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(rows) == 4 and sum(r["flagged_unused"] == "yes" for r in rows) == 3
    page.get_by_role("link", name="End it").first.click()  # the officer may end it: the page opens
    expect(page.get_by_role("heading", name="Change the end of access")).to_be_visible()
