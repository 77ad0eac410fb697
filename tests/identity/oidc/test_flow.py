"""The code flow against the real provider (tests/oidc) without a browser: PKCE on the wire, the
portal's MFA skipped when the ID token asserts MFA and asked for otherwise (from those who set up an
authenticator), and failures that end on the login page, never in a server error."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from audit.models import AuditEvent
from identity.models import OidcIdentity
from tests.identity.oidc.conftest import session_of, sign_in_over_http
from tests.oidc import OidcProvider

pytestmark = pytest.mark.django_db(transaction=True)
PASSWORD = "idp-secret"


def account(sub: str, **claims: Any) -> dict[str, Any]:
    return {sub: {"password": PASSWORD, "email": f"{sub}@corp.example", "preferred_username": sub, **claims}}


def portal_user(provider: OidcProvider, sub: str) -> User:
    return OidcIdentity.objects.select_related("user").get(issuer=provider.issuer, subject=sub).user


def test_the_redirect_to_the_provider_carries_pkce_and_a_nonce(live_server: Any, oidc_settings: OidcProvider) -> None:
    response = requests.get(f"{live_server.url}/oidc/authenticate/", allow_redirects=False, timeout=10)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{oidc_settings.issuer}/auth"
    query = parse_qs(location.query)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43
    assert query["nonce"] and query["state"] and query["response_type"] == ["code"]


def test_an_idp_that_asserts_mfa_gives_a_verified_session(live_server: Any, oidc_settings: OidcProvider) -> None:
    oidc_settings.set_accounts(account("mia", amr=["pwd", "mfa"]))
    http, landed = sign_in_over_http(live_server.url, oidc_settings, "mia", PASSWORD)
    assert landed.url == f"{live_server.url}/portal/grants/"
    session = session_of(http)
    assert session["_auth_user_id"] == str(portal_user(oidc_settings, "mia").pk)
    assert session[DEVICE_ID_SESSION_KEY].startswith("identity.identityproviderdevice/")


def test_an_acr_from_the_configured_set_counts_as_mfa(live_server: Any, oidc_settings: Any, settings: Any) -> None:
    settings.OIDC_MFA_ACR_VALUES = ["urn:corp:mfa"]
    oidc_settings.set_accounts(account("ali", acr="urn:corp:mfa"))
    http, _ = sign_in_over_http(live_server.url, oidc_settings, "ali", PASSWORD)
    assert DEVICE_ID_SESSION_KEY in session_of(http)


def test_without_mfa_at_the_idp_the_session_is_not_verified(live_server: Any, oidc_settings: OidcProvider) -> None:
    oidc_settings.set_accounts(account("noa", amr=["pwd"]))
    http, landed = sign_in_over_http(live_server.url, oidc_settings, "noa", PASSWORD)
    assert landed.url == f"{live_server.url}/portal/grants/"
    session = session_of(http)
    assert session["_auth_user_id"] and DEVICE_ID_SESSION_KEY not in session
    # Where MFA is required (the admin with MFA_REQUIRED), this session does not get in.
    User.objects.filter(pk=session["_auth_user_id"]).update(is_staff=True, is_superuser=True)
    from django.test import override_settings

    with override_settings(MFA_REQUIRED=True):
        admin = http.get(f"{live_server.url}/admin/", allow_redirects=False, timeout=10)
    assert admin.status_code == 302 and "/admin/login/" in admin.headers["Location"]


def test_without_mfa_at_the_idp_an_enrolled_person_enters_the_portals_code(
    live_server: Any, oidc_settings: OidcProvider
) -> None:
    oidc_settings.set_accounts(account("eve", amr=["pwd"]))
    http, _ = sign_in_over_http(live_server.url, oidc_settings, "eve", PASSWORD)
    user = portal_user(oidc_settings, "eve")
    device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
    http.cookies.clear()

    http, landed = sign_in_over_http(live_server.url, oidc_settings, "eve", PASSWORD)
    assert landed.url == f"{live_server.url}/oidc/second-factor/"
    assert "_auth_user_id" not in session_of(http)  # no session before the code
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', landed.text)
    assert csrf is not None
    form = {"csrfmiddlewaretoken": csrf.group(1), "otp_token": "000000"}
    wrong = http.post(landed.url, data=form, headers={"Referer": landed.url}, timeout=10)
    assert "That code does not match" in wrong.text
    assert "_auth_user_id" not in session_of(http)
    assert AuditEvent.objects.filter(action="auth.mfa_verify", outcome="denied").count() == 1
    device.refresh_from_db()
    assert device.throttling_failure_count == 1  # django-otp's throttle counts it
    # Arranging the world: the throttle's delay (one second after one failure) is not under test here.
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_count=0, throttling_failure_timestamp=None)

    code = f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"
    done = http.post(landed.url, data={**form, "otp_token": code}, headers={"Referer": landed.url}, timeout=10)
    assert done.url == f"{live_server.url}/portal/grants/"
    session = session_of(http)
    assert session["_auth_user_id"] == str(user.pk)
    assert session[DEVICE_ID_SESSION_KEY] == device.persistent_id


def test_a_refused_sign_in_ends_on_the_login_page_with_the_reason(
    live_server: Any, oidc_settings: OidcProvider, make_user: Any
) -> None:
    make_user("victim")
    oidc_settings.set_accounts(account("mallory", email="victim@example.com", preferred_username="victim"))
    http, landed = sign_in_over_http(live_server.url, oidc_settings, "mallory", PASSWORD)
    assert landed.url.startswith(f"{live_server.url}/accounts/login/")
    assert "already uses this email address" in landed.text
    assert "_auth_user_id" not in (session_of(http) or {})


def test_a_replayed_or_forged_callback_is_a_message_not_a_server_error(
    live_server: Any, oidc_settings: OidcProvider
) -> None:
    http = requests.Session()
    forged = http.get(f"{live_server.url}/oidc/callback/?code=abc&state=not-mine", timeout=10)
    assert forged.status_code == 200 and forged.url.startswith(f"{live_server.url}/accounts/login/")
    assert "did not work" in forged.text

    # A real code, but its state was already used once by this browser: refused the second time.
    oidc_settings.set_accounts(account("rex", amr=["mfa"]))
    http = requests.Session()
    start = http.get(f"{live_server.url}/oidc/authenticate/", timeout=10)
    uid = start.url.rsplit("/", 1)[1]
    login = http.post(
        f"{oidc_settings.issuer}/interaction/{uid}/login",
        data={"login": "rex", "password": PASSWORD},
        allow_redirects=True,
        timeout=10,
    )
    callback = next(r.url for r in login.history if "/oidc/callback/" in r.url)
    replay = requests.Session()
    replay.cookies.update(http.cookies)
    again = replay.get(callback, timeout=10)
    assert again.status_code == 200 and "did not work" in again.text


def test_a_provider_that_is_down_is_a_message(live_server: Any, oidc_on: Any) -> None:
    oidc_on.OIDC_OP_DISCOVERY_URL = "http://127.0.0.1:9/down/.well-known/openid-configuration"
    response = requests.get(f"{live_server.url}/oidc/authenticate/", timeout=10)
    assert response.url.startswith(f"{live_server.url}/accounts/login/")
    assert "Example IdP cannot be reached" in response.text


def test_refused_sign_ins_lock_nobody_out(live_server: Any, oidc_settings: OidcProvider, make_user: Any) -> None:
    """A refused OIDC sign-in has no username: django-axes must not count it against a shared
    "no username" key that would then lock every OIDC sign-in out."""
    make_user("victim")
    oidc_settings.set_accounts({**account("mallory", email="victim@example.com"), **account("good", amr=["mfa"])})
    for _ in range(5):
        _, landed = sign_in_over_http(live_server.url, oidc_settings, "mallory", PASSWORD)
        assert "already uses this email address" in landed.text
    http, landed = sign_in_over_http(live_server.url, oidc_settings, "good", PASSWORD)
    assert landed.url == f"{live_server.url}/portal/grants/"
    assert session_of(http)["_auth_user_id"] == str(portal_user(oidc_settings, "good").pk)
