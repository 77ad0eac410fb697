"""Acceptance (issue 16, item 1): a person signs in through the real OpenID provider in Chromium,
lands with the Role their IdP group maps to, and the Role's grant reaches them on the real target
PostgreSQL; the group removed at the provider, the next sign-in takes the membership away and the
privilege leaves the target (the real worker runs both)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from accounts.models import User
from accounts.roles import AUDITORS
from audit.models import AuditEvent
from governance.models import Dataset, Grant, GrantStatus, MembershipSource, RoleMembership
from governance.provisioning import principal_for
from governance.services.requests import access_request_approve, access_request_submit
from governance.services.roles import role_create
from identity.models import OidcIdentity
from identity.services.mappings import mapping_create
from tests.oidc import OidcProvider
from tests.provisioning.conftest import target_can, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]

SELECT = "SELECT * FROM finance.ledger"
SUBJECT = "00u-7f3a-alice"
IDP_PASSWORD = "idp-password-of-alice"


def alice(groups: list[str]) -> dict[str, Any]:
    return {
        SUBJECT: {
            "password": IDP_PASSWORD,
            "email": "alice@corp.example",
            "email_verified": True,
            "given_name": "Alice",
            "family_name": "Liddell",
            "preferred_username": "alice",
            "groups": groups,
            "amr": ["pwd", "mfa"],
        }
    }


def sign_in_with_provider(browser: Browser, base: str) -> Page:
    """A fresh browser (no session at the portal nor at the provider): the provider's login page."""
    page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
    page.goto(f"{base}/portal/")
    page.get_by_role("link", name="Sign in with Example IdP").click()
    expect(page.get_by_role("heading", name="Test IdP")).to_be_visible()
    page.get_by_label("IdP username").fill(SUBJECT)
    page.get_by_label("IdP password").fill(IDP_PASSWORD)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    assert page.url.startswith(base), page.url
    return page


def test_group_at_the_provider_gives_the_role_and_its_privilege_and_removing_it_takes_both(
    browser: Browser,
    live_server: Any,
    oidc_settings: OidcProvider,
    target_source: Any,
    owner: User,
    gov_admin: User,
) -> None:
    base = live_server.url
    role = role_create(actor=gov_admin, name="Finance analysts", owner=gov_admin)
    ledger = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    req = access_request_submit(
        requester=gov_admin, dataset=ledger, justification="close", duration=dt.timedelta(days=5), grantee_role=role
    )
    access_request_approve(access_request=req, approver=owner)
    wait_for(lambda: Grant.objects.get(source_request=req).status == GrantStatus.ACTIVE)
    from django.contrib.auth.models import Group

    mapping_create(actor=gov_admin, idp_group="Finance-Analysts", role=role)
    mapping_create(actor=gov_admin, idp_group="portal-auditors", portal_group=Group.objects.get(name=AUDITORS))
    oidc_settings.set_accounts(alice(["finance-analysts", "Portal-Auditors", "unmapped"]))

    # 1. First sign-in: the account is made from the claims, with the mapped Role and duty.
    page = sign_in_with_provider(browser, base)
    person = OidcIdentity.objects.get(subject=SUBJECT, issuer=oidc_settings.issuer).user
    assert (person.username, person.email, person.get_full_name()) == ("alice", "alice@corp.example", "Alice Liddell")
    assert not person.has_usable_password()
    membership = RoleMembership.objects.get(user=person, role=role, removed_at__isnull=True)
    assert membership.managed_by == MembershipSource.OIDC
    assert person.groups.filter(name=AUDITORS).exists()
    db_role = principal_for(source=target_source, user=person).db_role
    wait_for(lambda: target_can(target_source.database, db_role, SELECT), timeout=30)
    page.context.close()

    # 2. The group is taken away at the provider; the next sign-in takes the membership away, and
    # the engine revokes it on the target.
    oidc_settings.set_accounts(alice(["portal-auditors"]))
    page = sign_in_with_provider(browser, base)
    assert not RoleMembership.objects.filter(user=person, removed_at__isnull=True).exists()
    assert RoleMembership.objects.get(pk=membership.pk).removed_at is not None
    assert person.groups.filter(name=AUDITORS).exists()
    wait_for(lambda: not target_can(target_source.database, db_role, SELECT), timeout=30)
    synced = AuditEvent.objects.filter(action="identity.groups_synced", target_id=str(person.pk)).order_by("pk")
    assert [e.metadata["roles_removed"] for e in synced] == [[], [role.slug]]
    page.context.close()
