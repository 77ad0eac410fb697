"""Sign-in outcomes in the audit trail: successes, failures (with the username tried) and lockouts."""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver

from audit import services as audit


@receiver(user_logged_in, dispatch_uid="accounts.audit_login")
def _logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    audit.record(action="auth.login", actor=user, target=user)


@receiver(user_login_failed, dispatch_uid="accounts.audit_login_failed")
def _login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    username = str(credentials.get("username", ""))[:150]
    target = get_user_model().objects.filter(username=username).first()
    audit.record(
        action="auth.login_failed",
        actor=None,
        target=target,
        target_repr=username if target is None else "",
        outcome="denied",
        metadata={"username": username},
    )


@receiver(user_locked_out, dispatch_uid="accounts.audit_locked_out")
def _locked_out(sender: Any, request: Any = None, username: str | None = None, **kwargs: Any) -> None:
    target = get_user_model().objects.filter(username=username or "").first()
    audit.record(
        action="auth.locked_out",
        actor=None,
        target=target,
        target_repr=(username or "")[:300] if target is None else "",
        outcome="denied",
        metadata={"username": username or ""},
    )
