"""Break-glass end to end on the real TLS target with a real worker: the on-call engineer can SELECT
within seconds (the columns without PII only), through the temporary login they asked for too, the
officers get their email through the session's SMTP server, and the grant's own end (a task with its
ETA, no test help) takes the access and the login away."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from django.contrib.auth.models import Group
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.roles import REQUESTERS, SECURITY_OFFICERS, on_call_group
from governance.models import DataSource
from tests import mail
from tests.breakglass.conftest import code_for
from tests.provisioning.conftest import drop_test_roles, target_can, wait_for
from tests.provisioning.test_jit import target_address

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

SELECT_SAFE = 'SELECT id, country FROM "Sales EU".customers'
SELECT_PII = 'SELECT email FROM "Sales EU".customers'


@pytest.fixture
def customers(target_source: DataSource, classifications: dict[str, Any]) -> Iterator[Any]:
    from breakglass.models import BreakGlassPolicy
    from governance.models import ColumnTag, Dataset, TagStatus

    seed = importlib.import_module("breakglass.migrations.0002_default_policies")
    for slug, values in seed.DEFAULTS.items():
        BreakGlassPolicy.objects.update_or_create(classification=classifications[slug], defaults=values)
    ds = Dataset.objects.get(source=target_source, schema="Sales EU", name="customers")
    for name in ("email", "full_name"):
        ColumnTag.objects.update_or_create(
            column=ds.columns.get(name=name), tag="email", defaults={"status": TagStatus.CONFIRMED}
        )
    yield ds
    drop_test_roles(target_source.database)


@pytest.mark.usefixtures("celery_worker")
def test_break_glass_gives_access_within_seconds_tells_the_officers_and_ends_on_time(
    customers: Any, make_user: Any
) -> None:
    from breakglass.services.activation import break_glass_activate
    from governance.models import Grant, GrantStatus
    from governance.provisioning import grant_principal

    server = mail.current()
    assert server is not None
    server.clear()
    Group.objects.get_or_create(name=on_call_group())
    engineer = make_user("pager", REQUESTERS, on_call_group())
    TOTPDevice.objects.create(user=engineer, name="phone", confirmed=True)
    make_user("sec1", SECURITY_OFFICERS)
    make_user("sec2", SECURITY_OFFICERS)

    # 0.01 hours = 36 seconds: long enough to apply and use (under load too), short enough to watch it end.
    use = break_glass_activate(
        actor=engineer,
        dataset=customers,
        reason="INC-77: EU orders not syncing",
        hours=Decimal("0.01"),
        otp_token=code_for(engineer),
        temporary_login=True,
    )
    grant = Grant.objects.get(pk=use.grant_id)
    assert grant.columns == ["id", "country"]
    assert grant.jit_role, "the engineer asked for a temporary login"
    wait_for(lambda: Grant.objects.get(pk=grant.pk).status in (GrantStatus.ACTIVE, GrantStatus.FAILED), timeout=15)
    grant.refresh_from_db()
    assert grant.status == GrantStatus.ACTIVE, grant.jobs.values_list("last_error", flat=True)
    role = grant_principal(grant).db_role
    db = customers.source.database
    assert target_can(db, role, SELECT_SAFE)
    assert not target_can(db, role, SELECT_PII)  # PII left out by Confidential's break-glass policy

    # The temporary login: its password shown once to the engineer; it reads what the grant covers.
    from governance.services.jit import grant_jit_credentials_reveal

    password = grant_jit_credentials_reveal(grant=grant, actor=engineer)
    login = {"dbname": db, "user": grant.jit_role, "password": password, **target_address()}
    session = psycopg2.connect(**login)
    session.autocommit = True
    with session.cursor() as cur:
        cur.execute(SELECT_SAFE)
        cur.fetchall()
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute(SELECT_PII)
    session.close()

    mails = server.wait_for(2, timeout=20)
    assert sorted(r for m in mails for r in m.recipients) == ["sec1@example.com", "sec2@example.com"]
    assert all(m.subject == 'BREAK-GLASS: pager opened "Sales EU".customers' for m in mails), [m.subject for m in mails]

    # The end: the task published with the grant's end as its ETA revokes it through the engine.
    wait_for(lambda: not target_can(db, role, SELECT_SAFE), timeout=60, interval=0.5)
    wait_for(lambda: Grant.objects.get(pk=grant.pk).status == GrantStatus.EXPIRED, timeout=15)
    wait_for(lambda: Grant.objects.get(pk=grant.pk).jit_dropped_at is not None, timeout=15)
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(**login).close()  # the login is gone with the access


@pytest.mark.usefixtures("celery_worker")
def test_in_chromium_the_engineer_breaks_the_glass_the_officer_is_told_and_reviews_and_it_ends(
    customers: Any, make_user: Any, browser: Any, live_server: Any
) -> None:
    """The acceptance path, as people do it: sign in with the second factor, break the glass from the
    dataset's page, see the grant active within seconds, the officer's email, the review, the end."""
    import re

    from playwright.sync_api import expect

    from governance.provisioning import grant_principal
    from tests.conftest import PASSWORD

    server = mail.current()
    assert server is not None
    server.clear()
    Group.objects.get_or_create(name=on_call_group())
    engineer = make_user("pager", REQUESTERS, on_call_group())
    TOTPDevice.objects.create(user=engineer, name="phone", confirmed=True)
    make_user("sec1", SECURITY_OFFICERS)
    base = live_server.url

    def sign_in(username: str, code: str = "") -> Any:
        page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
        page.goto(f"{base}/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        if code:
            page.get_by_label("Authenticator code").fill(code)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("navigation", name="Main")).to_be_visible()
        return page

    page = sign_in("pager", code_for(engineer))
    page.goto(f"{base}/portal/datasets/{customers.pk}/")
    page.get_by_role("link", name="break the glass").click()
    page.get_by_label("Reason").fill("INC-88: EU invoices missing")
    page.get_by_label("Hours").fill("0.01")  # 36 seconds
    page.get_by_label("Second-factor code").fill(code_for(engineer, ahead=1))
    page.get_by_role("button", name="Break the glass").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Break-glass #")
    expect(page.locator("#review-state")).to_contain_text("assigned to sec1")
    if shots := os.environ.get("SCREENSHOT_DIR"):
        page.screenshot(path=f"{shots}/break-glass-use.png", full_page=True)

    def shows(text: str) -> bool:
        page.reload()
        return text in page.locator("#grant-state").inner_text()

    wait_for(lambda: shows("Active"), timeout=15, interval=0.5)
    grant = customers.grants.get()
    role = grant_principal(grant).db_role
    assert target_can(customers.source.database, role, SELECT_SAFE)

    message = server.wait_for(1, timeout=20, address="sec1@example.com")[0]
    assert message.subject == 'BREAK-GLASS: pager opened "Sales EU".customers'
    found = re.search(r"/portal/break-glass/\d+/", message.body())
    assert found, message.body()
    officer = sign_in("sec1")
    officer.goto(base + found.group(0))
    expect(officer.get_by_text("INC-88: EU invoices missing")).to_be_visible()
    officer.get_by_role("radio", name="Appropriate", exact=True).check()
    officer.get_by_label("Note").fill("Real incident, INC-88.")
    officer.get_by_role("button", name="Record the review").click()
    expect(officer.locator("#review-state")).to_contain_text("Appropriate by sec1")

    wait_for(lambda: not target_can(customers.source.database, role, SELECT_SAFE), timeout=60, interval=0.5)
    wait_for(lambda: shows("Expired"), timeout=15, interval=0.5)
