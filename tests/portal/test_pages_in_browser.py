"""The main pages in Debian's Chromium on a lived-in portal (tests/portal/scenery.py): each renders,
is operable from the keyboard, and is photographed for the docs ($SCREENSHOT_DIR)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from accounts.models import User
from governance.models import Classification, DataSource
from tests.conftest import PASSWORD
from tests.portal import scenery

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(
    source: DataSource, classifications: dict[str, Classification], owner: User, analyst: User, officer: User
) -> scenery.Scenery:
    return scenery.build(source, classifications, owner, analyst, officer)


CSP_VIOLATIONS: list[str] = []


def signed_in(browser: Browser, base: str, username: str, width: int = 1360) -> Page:
    page = browser.new_context(viewport={"width": width, "height": 860}).new_page()
    # The Content-Security-Policy must not break anything: Chromium reports each blocked script,
    # style or handler on the console.
    page.on(
        "console",
        lambda msg: CSP_VIOLATIONS.append(f"{page.url}: {msg.text}") if "Content Security Policy" in msg.text else None,
    )
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    return page


def test_main_pages_render_and_work_from_the_keyboard(
    browser: Browser, live_server: Any, world: scenery.Scenery, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    base = live_server.url

    officer = signed_in(browser, base, "officer", width=1500)
    officer.goto(f"{base}/portal/dashboard/")
    expect(officer.get_by_role("img", name="Pending requests by age")).to_be_visible()
    expect(officer.get_by_role("img", name="Grants in force by classification")).to_be_visible()
    expect(officer.locator(".headline")).to_contain_text("open drift findings")
    officer.screenshot(path=str(shots / "portal-dashboard.png"), full_page=True)

    officer.goto(f"{base}/portal/matrix/")
    expect(officer.locator(".mx-summary")).to_contain_text("8 roles")
    # Keyboard: tab into the matrix and open a cell with Enter; its panel shows the drift.
    drift_cell = officer.locator('summary[aria-label="Customer support on sales.customers: read, drift"]')
    drift_cell.focus()
    officer.keyboard.press("Enter")
    expect(officer.locator("details[open] .mx-pop")).to_contain_text("unexpected UPDATE on sales.customers")
    officer.screenshot(path=str(shots / "portal-matrix.png"))
    officer.keyboard.press("Enter")  # closes it again
    expect(officer.locator("details[open]")).to_have_count(0)

    owner = signed_in(browser, base, "owner", width=1500)
    owner.goto(f"{base}/portal/inbox/")
    expect(owner.locator(".request-card")).to_have_count(4)  # the officer-stage one is not theirs
    expect(owner.locator(".request-card").first).to_contain_text("Sensitive columns")
    owner.screenshot(path=str(shots / "portal-inbox-owner.png"), full_page=True)
    owner.goto(f"{base}/admin/governance/grant/matrix/")
    cell = owner.locator('summary[aria-label^="Analysts on marketing.web_sessions"]')
    cell.click()
    expect(owner.locator("details[open] .mx-pop").get_by_role("button", name="Approve")).to_be_visible()
    owner.screenshot(path=str(shots / "admin-matrix.png"))

    analyst = signed_in(browser, base, "analyst")
    analyst.goto(f"{base}/portal/?classification=restricted")
    expect(analyst.get_by_role("link", name="hr.employees")).to_be_visible()
    analyst.screenshot(path=str(shots / "portal-catalog-restricted.png"), full_page=True)
    analyst.goto(f"{base}/portal/grants/")
    expect(analyst.get_by_role("link", name="sales.customers")).to_be_visible()
    expect(analyst.get_by_text("Provisioning failed")).to_be_visible()
    analyst.screenshot(path=str(shots / "portal-grants.png"), full_page=True)
    analyst.goto(f"{base}/portal/requests/")
    expect(analyst.locator("tbody tr")).to_have_count(5)
    analyst.screenshot(path=str(shots / "portal-requests.png"), full_page=True)
    # Visible focus: the skip link is the first stop and shows itself.
    analyst.keyboard.press("Tab")
    expect(analyst.get_by_role("link", name="Skip to content")).to_be_focused()
    # HTMX works under the CSP: a request page refreshes its status block by itself.
    analyst.goto(f"{base}/portal/requests/{world.pending[0].pk}/")
    with analyst.expect_response(
        lambda r: "/portal/requests/" in r.url and r.request.headers.get("hx-request") == "true", timeout=15_000
    ):
        pass
    assert not CSP_VIOLATIONS, CSP_VIOLATIONS
