"""Break-glass: with OIDC on and LOCAL_LOGIN_ALLOWED_USERS set, the portal's and the admin's password
forms refuse everyone else with a clear message; the login page offers the provider."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from audit.models import AuditEvent
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db
REFUSED = "Passwords are switched off for this account: sign in with Example IdP."


@pytest.fixture
def break_glass(oidc_on: Any, make_user: Any) -> Any:
    oidc_on.LOCAL_LOGIN_ALLOWED_USERS = ["Break-Glass"]
    make_user("break-glass", superuser=True)
    make_user("analyst")
    return oidc_on


def test_the_portal_login_refuses_a_password_outside_the_list(break_glass: Any, client: Client) -> None:
    response = client.post("/accounts/login/", {"username": "analyst", "password": PASSWORD})
    assert response.status_code == 200
    assert REFUSED in response.content.decode()
    assert "_auth_user_id" not in client.session
    refused = AuditEvent.objects.get(action="auth.local_login_refused")
    assert (refused.outcome, refused.target_repr) == ("denied", "analyst")
    # No password was checked: nothing counts towards a lockout, and a wrong one says the same.
    assert not AuditEvent.objects.filter(action="auth.login_failed").exists()
    wrong = client.post("/accounts/login/", {"username": "analyst", "password": "wrong"})
    assert REFUSED in wrong.content.decode()


def test_the_break_glass_account_still_signs_in_with_its_password(break_glass: Any, client: Client) -> None:
    response = client.post("/accounts/login/", {"username": "break-glass", "password": PASSWORD})
    assert response.status_code == 302
    assert client.session["_auth_user_id"]


@pytest.mark.parametrize("mfa_required", [False, True])
def test_the_admin_login_refuses_too(break_glass: Any, client: Client, mfa_required: bool) -> None:
    break_glass.MFA_REQUIRED = mfa_required
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "analyst", "password": PASSWORD, "otp_token": "123456"}
    )
    assert response.status_code == 200
    assert REFUSED in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_without_oidc_the_list_changes_nothing(settings: Any, make_user: Any, client: Client) -> None:
    settings.OIDC_ENABLED = False
    settings.LOCAL_LOGIN_ALLOWED_USERS = ["someone-else"]
    make_user("analyst")
    response = client.post("/accounts/login/", {"username": "analyst", "password": PASSWORD})
    assert response.status_code == 302


def test_with_oidc_and_no_list_passwords_still_work(oidc_on: Any, make_user: Any, client: Client) -> None:
    make_user("analyst")
    assert client.post("/accounts/login/", {"username": "analyst", "password": PASSWORD}).status_code == 302


def test_the_login_page_offers_the_provider_only_when_oidc_is_on(settings: Any, client: Client) -> None:
    settings.OIDC_ENABLED = False
    assert "Sign in with" not in client.get("/accounts/login/").content.decode()
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/?code=x&state=y").status_code == 404
    settings.OIDC_ENABLED = True
    settings.OIDC_PROVIDER_NAME = "Okta"
    page = client.get("/accounts/login/?next=/portal/grants/").content.decode()
    assert 'href="/oidc/authenticate/?next=/portal/grants/"' in page
    assert "Sign in with Okta" in page
