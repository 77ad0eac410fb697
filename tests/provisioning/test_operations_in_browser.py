"""A catalog sync started in the admin, watched in a real browser (Debian's Chromium through
Playwright) against the live server and a real worker: the page's progress bar, refreshed by HTMX,
reaches the end and shows what the sync did."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from governance.models import Dataset, Operation
from tests.provisioning.test_admin_in_browser import sign_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]


def test_the_progress_bar_of_an_admin_sync_reaches_done(
    page: Page, live_server: Any, fresh_target: Any, gov_admin: Any
) -> None:
    sign_in(page, live_server.url, gov_admin.username, "/admin/governance/datasource/")
    page.get_by_role("row", name=fresh_target.name).get_by_role("checkbox").check()
    page.get_by_role("combobox", name="Action").select_option("sync_catalog")
    page.get_by_role("button", name="Go").click()

    operation = Operation.objects.get(source=fresh_target)
    expect(page).to_have_url(f"{live_server.url}/admin/governance/operation/{operation.pk}/change/")
    # The page polls its fragment until the worker has finished (no reload by the test).
    expect(page.locator("#operation-state")).to_have_text("Succeeded", timeout=60_000)
    expect(page.locator("#operation-bar")).to_have_attribute("value", "100")
    created = Dataset.objects.filter(source=fresh_target).count()
    expect(page.locator("#operation-summary")).to_contain_text(f"{created} datasets created")
