"""The second factor (django-otp): TOTP authenticators with recovery codes, and where it is required.

`MFA_REQUIRED` (settings) turns the requirement on for the admin site (PortalAdminSite), for
deciding Confidential and Restricted requests, and for revealing a temporary database password.
Sign-in asks for the authenticator's code from everyone who has set one up, whatever the setting.
An OIDC sign-in (identity.oidc) whose ID token asserts MFA (amr/acr) counts as verified instead; one
that does not asks for the code in the same way.
"""

from __future__ import annotations

import secrets
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin import AdminSite
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.db import transaction
from django_otp import devices_for_user
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite
from django_otp.forms import OTPAuthenticationFormMixin
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit import services as audit

from .local_login import LocalLoginGate

RECOVERY_CODES = 10
CONFIDENTIAL_RANK = 30  # Confidential and above need a verified session to decide


def required() -> bool:
    return bool(getattr(settings, "MFA_REQUIRED", True))


def is_verified(user: Any) -> bool:
    return bool(getattr(user, "is_verified", lambda: False)())


def has_device(user: Any) -> bool:
    """The person set up a second factor of their own (a device standing for the identity
    provider's MFA, identity.oidc, does not count: it takes no code)."""
    return any(getattr(d, "counts_as_enrolled", True) for d in devices_for_user(user, confirmed=True))


def device_for_code(user: Any, token: str) -> Any:
    """Which of the person's devices a code is for, from its shape: a recovery code (xxxxxx-xxxxxx)
    or the authenticator's digits."""
    model = StaticDevice if "-" in token else TOTPDevice
    return model.objects.filter(user=user, confirmed=True).first()


@transaction.atomic
def second_factor_verify(*, user: Any, token: str) -> Any:
    """The device that accepts this code (throttled as django-otp throttles), or None (audited)."""
    token = token.strip().replace(" ", "")
    device = device_for_code(user, token) if token else None
    if device is not None:
        device = type(device).objects.select_for_update().get(pk=device.pk)
        allowed, _ = device.verify_is_allowed()
        if allowed and device.verify_token(token):
            return device
    audit.record(action="auth.mfa_verify", actor=user, target=user, outcome="denied", reason="wrong code")
    return None


def needs_second_factor_for(user: Any, classification_rank: int) -> bool:
    """Whether deciding on data of this rank needs a session verified by a second factor."""
    return required() and classification_rank >= CONFIDENTIAL_RANK and not is_verified(user)


class _DeviceFromToken:
    """Which device a code is for, from its shape: a recovery code (xxxxxx-xxxxxx) or the
    authenticator's digits. django-otp asks for an explicit choice rather than trying each device
    (which would count failures against the others)."""

    cleaned_data: dict[str, Any]

    def _chosen_device(self, user: Any) -> Any:
        device = super()._chosen_device(user)  # type: ignore[misc]
        if device is not None:
            return device
        return device_for_code(user, str(self.cleaned_data.get("otp_token") or "").strip())


class PortalAdminLoginForm(LocalLoginGate, _DeviceFromToken, OTPAdminAuthenticationForm):
    pass


class PortalAdminPasswordForm(LocalLoginGate, AdminAuthenticationForm):
    """The admin's password form without MFA_REQUIRED (Django's own, behind the break-glass gate)."""


class PortalAdminSite(OTPAdminSite):
    """The admin: with MFA_REQUIRED, only sessions verified by a second factor get in (its login
    form asks for the code); without, Django's plain admin."""

    def __init__(self, name: str = "admin") -> None:
        AdminSite.__init__(self, name)

    @property
    def login_form(self) -> Any:
        return PortalAdminLoginForm if required() else PortalAdminPasswordForm

    @property
    def login_template(self) -> Any:
        return "admin/login_mfa.html" if required() else None

    def has_permission(self, request: Any) -> bool:
        if required():
            return super().has_permission(request)
        return AdminSite.has_permission(self, request)


class PortalLoginForm(LocalLoginGate, _DeviceFromToken, OTPAuthenticationFormMixin, AuthenticationForm):
    """Username and password; then the authenticator's code, for those who set one up."""

    otp_token = forms.CharField(
        required=False, label="Authenticator code", help_text="Only if you set up an authenticator app."
    )
    otp_device = forms.CharField(required=False, widget=forms.HiddenInput)
    otp_challenge = forms.CharField(required=False, widget=forms.HiddenInput)

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "Your username and password did not match. Please try again.",
    }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        user = self.get_user()
        if user is not None and has_device(user):
            self.clean_otp(user)
        return cleaned


def totp_pending(*, user: Any) -> TOTPDevice:
    """The authenticator being set up: unconfirmed until a code from it is entered (totp_confirm).
    Not audited: it grants nothing until confirmed, and confirming is."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    return device or TOTPDevice.objects.create(user=user, name="authenticator", confirmed=False)


@transaction.atomic
def totp_confirm(*, user: Any, device: TOTPDevice, token: str) -> list[str] | None:
    """Confirm a new authenticator with a code from it; returns fresh recovery codes (shown once),
    or None when the code is wrong."""
    if device.user_id != user.pk or not device.verify_token(token.strip().replace(" ", "")):
        audit.record(action="auth.mfa_enrol", actor=user, target=user, outcome="denied", reason="wrong code")
        return None
    TOTPDevice.objects.filter(user=user, confirmed=True).exclude(pk=device.pk).delete()
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    codes = recovery_codes_reset(user=user, record=False)
    audit.record(action="auth.mfa_enrolled", actor=user, target=user, metadata={"device": "totp"})
    return codes


@transaction.atomic
def recovery_codes_reset(*, user: Any, record: bool = True) -> list[str]:
    """Ten single-use recovery codes, replacing any earlier ones."""
    static, _ = StaticDevice.objects.get_or_create(user=user, name="recovery codes", defaults={"confirmed": True})
    static.token_set.all().delete()
    codes = [f"{secrets.token_hex(3)}-{secrets.token_hex(3)}" for _ in range(RECOVERY_CODES)]
    StaticToken.objects.bulk_create(StaticToken(device=static, token=code) for code in codes)
    if record:
        audit.record(action="auth.recovery_codes_reset", actor=user, target=user)
    return codes
