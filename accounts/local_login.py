"""Local passwords, switched off for everyone but a break-glass list when the company sign-in is on.

With OIDC on (settings.OIDC_ENABLED) and LOCAL_LOGIN_ALLOWED_USERS set, the portal's and the
admin's password forms refuse every other username before a password is checked (no lockout
count, no hint whether the password was right) and say to sign in with the provider.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from audit import services as audit


def restricted() -> bool:
    return bool(getattr(settings, "OIDC_ENABLED", False) and getattr(settings, "LOCAL_LOGIN_ALLOWED_USERS", []))


def allowed(username: str) -> bool:
    if not restricted():
        return True
    allowed_names = {name.strip().lower() for name in settings.LOCAL_LOGIN_ALLOWED_USERS}
    return username.strip().lower() in allowed_names


def refusal_message() -> str:
    name = getattr(settings, "OIDC_PROVIDER_NAME", "") or "your company account"
    return f"Passwords are switched off for this account: sign in with {name}."


class LocalLoginGate:
    """For Django authentication forms: refuse a username outside the break-glass list."""

    data: Any
    request: Any

    def clean(self) -> Any:
        username = str(self.data.get("username") or "")
        if username and not allowed(username):
            audit.record(
                action="auth.local_login_refused",
                actor=None,
                target_type="accounts.user",
                target_repr=username[:150],
                outcome="denied",
                reason="local passwords are off for this user (LOCAL_LOGIN_ALLOWED_USERS)",
            )
            raise forms.ValidationError(refusal_message(), code="local_login_off")
        return super().clean()  # type: ignore[misc]
