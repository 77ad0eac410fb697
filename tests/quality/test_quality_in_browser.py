"""Quality where decisions are made, in Debian's Chromium against the live server: the owner runs the
checks of a table from its page (the message the page publishes is run by the worker's task function
in this process, so the test never waits on a shared worker's queue; it measures the real source), a failing
completeness check shows on the dataset page, the analyst's request form, the owner's inbox card and
the catalog's "failing checks" filter; fixing the data and running again turns it green."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from governance.services.requests import access_request_submit
from quality.services import runs
from quality.services.checks import quality_check_create
from quality.tasks import run_quality_checks
from tests.provisioning.conftest import dba, wait_for
from tests.provisioning.test_portal_journey import portal_sign_in

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[Any]]]:
    """The messages the portal publishes, kept here instead of sent to a broker."""
    sent: list[tuple[str, list[Any]]] = []
    monkeypatch.setattr(runs.current_app, "send_task", lambda name, args, **options: sent.append((name, list(args))))
    return sent


def run_from_the_page(page: Page, base: str, dataset: Any, status: str, published: list[tuple[str, list[Any]]]) -> None:
    published.clear()
    page.goto(f"{base}/portal/datasets/{dataset.pk}/")
    page.get_by_role("button", name="Run the checks now").click()
    expect(page.get_by_role("status")).to_contain_text("The checks run now")
    wanted = "quality.tasks.run_quality_checks"
    [args] = wait_for(lambda: [a for name, a in published if name == wanted])
    assert args[0] == dataset.pk
    assert run_quality_checks(*args) == status  # what the worker runs for that message
    page.reload()


def test_a_failing_check_shows_where_people_decide_and_turns_green_once_fixed(
    browser: Browser, live_server: Any, customers: Any, owner: Any, analyst: Any, published: Any
) -> None:
    base = live_server.url
    quality_check_create(actor=owner, dataset=customers, name="email present", kind="completeness", column="email")
    access_request_submit(
        requester=analyst, dataset=customers, justification="churn model", duration=dt.timedelta(days=7)
    )
    owner_page = portal_sign_in(browser, base, owner.username)
    run_from_the_page(owner_page, base, customers, "failing", published)
    section = owner_page.locator("#quality-section")
    expect(section.locator(".quality-badge")).to_have_attribute("data-quality", "failing")
    expect(section.locator("tr[data-check='email present'] td.status-fail")).to_have_text("Fail")
    expect(section.locator("tr[data-check='email present']")).to_contain_text("0.1")  # 10 of 100 NULL
    # The approver's inbox card shows it beside the request.
    owner_page.goto(f"{base}/portal/inbox/")
    expect(owner_page.locator(".request-card .quality-badge")).to_have_attribute("data-quality", "failing")
    expect(owner_page.locator(".request-card .quality-badge")).to_contain_text("1 of 1 checks failing")
    # The catalog finds it with the "failing checks" filter.
    owner_page.goto(f"{base}/portal/?quality=failing")
    expect(owner_page.locator("table.data tbody tr")).to_have_count(1)
    expect(owner_page.locator("table.data tbody")).to_contain_text("shop.customers")
    # The analyst sees it on the request form before asking.
    analyst_page = portal_sign_in(browser, base, analyst.username)
    analyst_page.goto(f"{base}/portal/datasets/{customers.pk}/request/")
    expect(analyst_page.locator("#request-quality .quality-badge")).to_have_attribute("data-quality", "failing")
    # The analyst may not run the checks (no button, and the service refuses a forged POST).
    analyst_page.goto(f"{base}/portal/datasets/{customers.pk}/")
    expect(analyst_page.get_by_role("button", name="Run the checks now")).to_have_count(0)

    dba(
        customers.source.database,
        "UPDATE shop.customers SET email = 'filled' || id || '@example.com' WHERE email IS NULL",
    )
    run_from_the_page(owner_page, base, customers, "passing", published)
    expect(owner_page.locator("#quality-section .quality-badge")).to_have_attribute("data-quality", "passing")
    expect(owner_page.locator("#quality-section .quality-trend rect")).to_have_count(2)
    analyst_page.goto(f"{base}/portal/datasets/{customers.pk}/request/")
    expect(analyst_page.locator("#request-quality .quality-badge")).to_have_attribute("data-quality", "passing")
