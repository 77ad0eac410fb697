"""The approval workbench in a real browser (Debian's Chromium through Playwright) against the live
server, with a real worker and the real target: the owner approves in the admin, and the analyst's
role can then really SELECT the table. (The web portal and its own browser tests come with issue 5;
this is the harness they will use.)"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from governance.models import Dataset, Grant, GrantStatus
from governance.provisioning import grant_principal
from governance.services.requests import access_request_submit
from tests.conftest import PASSWORD
from tests.provisioning.conftest import target_can, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]


def sign_in(page: Page, base: str, username: str, next_path: str) -> None:
    page.goto(f"{base}/admin/login/?next={next_path}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_owner_approves_in_the_admin_and_the_grant_becomes_real(
    page: Page, live_server: Any, target_source: Any, analyst: Any, owner: Any, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    req = access_request_submit(
        requester=analyst, dataset=ds, justification="month-end close", duration=dt.timedelta(days=7)
    )

    sign_in(page, live_server.url, "owner", f"/admin/governance/accessrequest/{req.pk}/change/")
    expect(page.get_by_text('REVOKE ALL ON TABLE "finance"."ledger"')).to_be_visible()  # the plan, before deciding
    page.get_by_label(re.compile("Comment")).fill("ok for the close")
    page.get_by_role("button", name=re.compile(r"^Approve .* stage$")).click()
    expect(page.locator(".messagelist")).to_contain_text("stage approved")

    grant = wait_for(lambda: Grant.objects.filter(source_request=req, status=GrantStatus.ACTIVE).first(), timeout=20)
    role = grant_principal(grant).db_role
    assert target_can(target_source.database, role, "SELECT * FROM finance.ledger")
    page.goto(f"{live_server.url}/admin/governance/grant/{grant.pk}/change/")
    expect(page.locator("body")).to_contain_text("Active")
    page.screenshot(path=str(shots / "admin-grant-active.png"), full_page=True)
