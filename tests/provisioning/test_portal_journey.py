"""The whole journey in Debian's Chromium against the live server, a real worker and the real target:

the analyst asks for a Restricted table in the portal → the owner approves from the admin's
permission matrix → the security officer approves from the portal's inbox → the analyst's request
page (refreshing itself through HTMX) turns Active and the analyst's database role can really SELECT
the table → the owner revokes from the matrix and the privilege is gone from the target → a request
the owner denies from the inbox shows its reason on the analyst's page.

Screenshots of each step go to $SCREENSHOT_DIR (a temporary directory otherwise).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from accounts.models import User
from governance.models import AccessRequest, Classification, Dataset, Grant, GrantStatus
from governance.provisioning import grant_principal
from tests.conftest import PASSWORD
from tests.provisioning.conftest import target_can, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]

SELECT = "SELECT * FROM finance.ledger"


def portal_sign_in(browser: Browser, base: str, username: str) -> Page:
    page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
    page.goto(f"{base}/portal/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    return page


def admin_sign_in(browser: Browser, base: str, username: str, next_path: str) -> Page:
    page = browser.new_context(viewport={"width": 1500, "height": 900}).new_page()
    page.goto(f"{base}/admin/login/?next={next_path}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    return page


def open_cell(page: Page, label: str) -> Any:
    summary = page.locator(f'summary[aria-label^="{label}"]')
    summary.click()
    return page.locator("td.mx-cell", has=summary)


def test_request_approve_from_matrix_and_inbox_then_revoke_and_deny(
    browser: Browser,
    live_server: Any,
    target_source: Any,
    analyst: User,
    owner: User,
    officer: User,
    classifications: dict[str, Classification],
    tmp_path: Path,
) -> None:
    shots = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    base = live_server.url
    ledger = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    Dataset.objects.filter(pk=ledger.pk).update(classification=classifications["restricted"])

    # 1. The analyst finds the table and asks for it.
    me = portal_sign_in(browser, base, "analyst")
    me.get_by_role("searchbox", name="Search").fill("ledger")
    me.keyboard.press("Enter")
    me.get_by_role("link", name="finance.ledger").click()
    expect(me.get_by_role("heading", name=re.compile("finance.ledger"))).to_contain_text("Restricted")
    me.get_by_role("link", name="Request access").click()
    me.locator("#id_duration").fill("7")
    me.locator("#id_duration_unit").select_option("days")
    me.get_by_label("Justification").fill("Month-end close: reconcile the ledger")
    me.get_by_role("button", name="Submit request").click()
    expect(me.locator(".messages")).to_contain_text("submitted: pending")
    req = AccessRequest.objects.get(requester=analyst, dataset=ledger)
    me.get_by_role("link", name="My requests").click()
    me.get_by_role("link", name=f"#{req.pk}").click()
    expect(me.locator("#request-status")).to_contain_text("Waiting for dataset owner")
    expect(me.get_by_text("REVOKE ALL ON TABLE")).to_be_visible()  # the plan, before any decision

    # 2. The owner approves the first stage from the permission matrix in the admin.
    matrix_url = "/admin/governance/grant/matrix/"
    own = admin_sign_in(browser, base, "owner", matrix_url)
    own.get_by_label("Rows").select_option("people")
    own.get_by_role("button", name="Apply").click()
    cell = open_cell(own, "analyst on finance.ledger: none, 1 pending")
    cell.get_by_label("Comment (required to deny)").fill("ok for the close")
    own.screenshot(path=str(shots / "admin-matrix-pending.png"))
    cell.get_by_role("button", name="Approve").click()
    expect(own.locator(".messagelist")).to_contain_text(f"Request #{req.pk}: stage approved.")

    # 3. The security officer approves the last stage from the inbox, seeing the risk.
    sec = portal_sign_in(browser, base, "officer")
    sec.get_by_role("link", name="Inbox").click()
    card = sec.locator(f"#req-{req.pk}")
    expect(card).to_contain_text("Restricted data")
    expect(card).to_contain_text("Month-end close")
    sec.screenshot(path=str(shots / "portal-inbox.png"), full_page=True)
    card.get_by_label("Comment").fill("approved for 7 days")
    card.get_by_role("button", name="Approve").click()
    expect(sec.locator(f"#req-{req.pk}")).to_contain_text("approved; access is being provisioned")

    # 4. The analyst's page, left open, turns Active by itself; the privilege is real.
    expect(me.locator("#request-status")).to_contain_text("Active", timeout=30_000)
    expect(me.locator("#request-status")).to_contain_text("verified on the database")
    me.screenshot(path=str(shots / "portal-request-active.png"), full_page=True)
    grant = Grant.objects.get(source_request=req)
    assert grant.status == GrantStatus.ACTIVE
    role = grant_principal(grant).db_role
    assert target_can(target_source.database, role, SELECT)
    me.get_by_role("link", name="See it in My grants").click()
    expect(me.get_by_role("link", name="finance.ledger")).to_be_visible()
    me.screenshot(path=str(shots / "portal-my-grants.png"), full_page=True)

    # 5. The owner revokes from the matrix; the worker removes the privilege from the target.
    own.goto(f"{base}{matrix_url}?rows=people")
    cell = open_cell(own, "analyst on finance.ledger: read")
    cell.get_by_label("Reason for revoking").fill("close is done")
    cell.get_by_role("button", name="Revoke").click()
    expect(own.locator(".messagelist")).to_contain_text(f"Grant #{grant.pk} revoked")
    wait_for(lambda: not target_can(target_source.database, role, SELECT), timeout=20)
    me.goto(f"{base}/portal/requests/{req.pk}/")
    expect(me.locator("#request-status")).to_contain_text("Revoked by owner")
    expect(me.locator("#request-status")).to_contain_text("Privileges removed from the database", timeout=20_000)

    # 6. A request the owner denies from the inbox shows its reason to the analyst.
    customers = Dataset.objects.get(source=target_source, schema="Sales EU", name="customers")
    me.goto(f"{base}/portal/datasets/{customers.pk}/request/")
    me.locator("#id_duration").fill("3")
    me.get_by_label("Justification").fill("churn analysis")
    me.get_by_role("button", name="Submit request").click()
    denied = AccessRequest.objects.get(requester=analyst, dataset=customers)
    own.goto(f"{base}/portal/inbox/")
    card = own.locator(f"#req-{denied.pk}")
    card.get_by_role("button", name="Deny").click()  # without a reason: refused, the card stays
    expect(own.locator(f"#req-{denied.pk}")).to_contain_text("Say why you deny the request")
    own.locator(f"#req-{denied.pk}").get_by_label("Comment").fill("use the anonymised extract instead")
    own.locator(f"#req-{denied.pk}").get_by_role("button", name="Deny").click()
    expect(own.locator(f"#req-{denied.pk}")).to_contain_text(f"Request #{denied.pk} denied.")
    me.goto(f"{base}/portal/requests/")
    row = me.locator("tr", has=me.get_by_role("link", name=f"#{denied.pk}"))
    expect(row).to_contain_text("Denied")
    expect(row).to_contain_text("use the anonymised extract instead")
    me.screenshot(path=str(shots / "portal-my-requests.png"), full_page=True)
