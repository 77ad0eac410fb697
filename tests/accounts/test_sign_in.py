"""Sign-in hardening: lockout after wrong passwords (audited), the second factor for the admin, for
deciding Confidential/Restricted requests and for revealing passwords, enrolment and recovery codes."""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

import pytest
from django.test import Client, override_settings
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from audit.models import AuditEvent
from governance.models import AccessRequest, Dataset
from governance.services.requests import access_request_submit
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def sign_in(client: Client, username: str, password: str = PASSWORD, **extra: str) -> Any:
    return client.post("/accounts/login/", {"username": username, "password": password, **extra})


def code_for(device: TOTPDevice, ahead: int = 0) -> str:
    """The authenticator's code now, or `ahead` steps later (a code is accepted once: a second
    sign-in in the same 30 s uses the next one, which the device's tolerance allows)."""
    device.refresh_from_db()
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = dt.datetime.now(dt.UTC).timestamp() + ahead * device.step
    return f"{totp.token():06d}"


def enrol(client: Client) -> tuple[TOTPDevice, list[str]]:
    page = client.get("/accounts/two-factor/").content.decode()
    assert "<svg" in page and 'id="secret"' in page
    device = TOTPDevice.objects.get(confirmed=False)
    done = client.post("/accounts/two-factor/", {"token": code_for(device)}).content.decode()
    codes = re.findall(r"<code>([0-9a-f]{6}-[0-9a-f]{6})</code>", done)
    assert len(codes) == 10, re.findall(r'role="alert">([^<]*)<', done)
    device.refresh_from_db()
    assert device.confirmed
    return device, codes


def test_the_fourth_wrong_password_locks_the_account_and_is_audited(analyst: User) -> None:
    client = Client()
    for _ in range(3):
        response = sign_in(client, "analyst", "wrong")
        assert response.status_code == 200 and "did not match" in response.content.decode()
    locked = sign_in(client, "analyst", "wrong")
    assert locked.status_code in (403, 429) and "Too many wrong passwords" in locked.content.decode()
    # Locked: even the right password is refused now, from any client.
    assert "Too many wrong passwords" in sign_in(Client(), "analyst").content.decode()
    failures = AuditEvent.objects.filter(action="auth.login_failed", outcome="denied", target_id=str(analyst.pk))
    assert failures.count() >= 4
    assert AuditEvent.objects.filter(action="auth.locked_out", target_id=str(analyst.pk)).exists()
    assert not AuditEvent.objects.filter(action="auth.login", actor=analyst).exists()


def test_a_success_resets_the_count(analyst: User) -> None:
    client = Client()
    for _ in range(3):
        sign_in(client, "analyst", "wrong")
    assert sign_in(client, "analyst").status_code == 302
    for _ in range(3):
        sign_in(Client(), "analyst", "wrong")
    assert sign_in(Client(), "analyst").status_code == 302
    assert AuditEvent.objects.filter(action="auth.login", actor=analyst).count() == 2


@override_settings(MFA_REQUIRED=True)
def test_admin_without_a_second_factor_is_refused(owner: User) -> None:
    client = Client()
    assert sign_in(client, "owner").status_code == 302  # the portal: password is enough
    assert client.get("/portal/").status_code == 200
    admin = client.get("/admin/")
    assert admin.status_code == 302 and admin["Location"].startswith("/admin/login/")
    page = client.get(admin["Location"]).content.decode()
    assert "needs a second factor" in page and 'name="otp_token"' in page
    # Password without a code: refused by the admin's login form.
    refused = client.post("/admin/login/?next=/admin/", {"username": "owner", "password": PASSWORD})
    assert refused.status_code == 200 and client.get("/admin/").status_code == 302
    # Enrol, sign in again with the code: the admin opens.
    device, _ = enrol(client)
    fresh = Client()
    response = sign_in(fresh, "owner", otp_token=code_for(device, ahead=1))
    assert response.status_code == 302, re.findall(r'role="alert"><p>([^<]*)<', response.content.decode())
    assert fresh.get("/admin/").status_code == 200


@override_settings(MFA_REQUIRED=True)
def test_deciding_restricted_data_needs_a_verified_session(
    analyst: User, owner: User, restricted_dataset: Dataset
) -> None:
    req = access_request_submit(
        requester=analyst, dataset=restricted_dataset, justification="audit", duration=dt.timedelta(days=2)
    )
    password_only = Client()
    sign_in(password_only, "owner")
    body = password_only.post(
        "/portal/inbox/decide/", {"ids": req.pk, f"stage_{req.pk}": "owner", "decision": "approve"}, follow=True
    ).content.decode()
    assert "needs a sign-in with your authenticator" in body
    req.refresh_from_db()
    assert req.current_stage == "owner"
    enrol(password_only)  # enrolling verifies this session
    password_only.post("/portal/inbox/decide/", {"ids": req.pk, f"stage_{req.pk}": "owner", "decision": "approve"})
    assert AccessRequest.objects.get(pk=req.pk).current_stage == "security_officer"


def test_a_wrong_code_is_refused_and_a_recovery_code_works_once(owner: User) -> None:
    client = Client()
    sign_in(client, "owner")
    bad = client.post("/accounts/two-factor/", {"token": "000000"}).content.decode()
    assert "does not match" in bad and not TOTPDevice.objects.filter(confirmed=True).exists()
    time.sleep(1.1)  # django-otp throttles a device for a second after a wrong code
    _, codes = enrol(client)
    wrong = sign_in(Client(), "owner", otp_token="123456")
    assert wrong.status_code == 200
    assert sign_in(Client(), "owner").status_code == 200  # has an authenticator: the code is required
    assert sign_in(Client(), "owner", otp_token=codes[0]).status_code == 302
    assert sign_in(Client(), "owner", otp_token=codes[0]).status_code == 200  # used up
    assert AuditEvent.objects.filter(action="auth.mfa_enrolled", actor=owner).exists()


def test_a_session_lasts_a_working_day(analyst: User) -> None:
    client = Client()
    assert sign_in(client, "analyst").status_code == 302
    assert client.session.get_expiry_age() == 8 * 3600
