"""The posture page in Debian's Chromium: an auditor finds it from the header, sees a source without
certificate verification fail with its name, follows the evidence and downloads the PDF."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from accounts.models import User
from governance.models import DataSource
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_auditor_reads_the_posture_follows_the_evidence_and_downloads_the_pdf(
    browser: Browser, live_server: Any, auditor: User, tmp_path: Path
) -> None:
    DataSource.objects.create(name="legacy_dwh", host="db", database="d", username="u", sslmode="prefer")
    page = browser.new_context(viewport={"width": 1500, "height": 900}, accept_downloads=True).new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("auditor")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Compliance").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text("Compliance posture")
    tls = page.get_by_role("row").filter(has_text="TLS with certificate verification to every source")
    expect(tls).to_contain_text("Fail")
    expect(tls).to_contain_text("legacy_dwh (sslmode prefer)")
    expect(page.get_by_role("row").filter(has_text="No open drift older than a day")).to_contain_text("Pass")
    page.screenshot(path=str(Path(os.environ.get("SCREENSHOT_DIR") or tmp_path) / "portal-compliance.png"))

    with page.expect_download() as download:
        page.get_by_role("link", name="Download as PDF").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name.startswith("compliance-posture-") and saved.read_bytes().startswith(b"%PDF-")

    tls.get_by_role("link", name="Data sources").click()
    expect(page.locator("#result_list")).to_contain_text("legacy_dwh")
