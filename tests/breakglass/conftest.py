"""Fixtures of the break-glass tests: the seeded policies, an on-call engineer with an authenticator,
and the code it shows now."""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.roles import REQUESTERS, SECURITY_OFFICERS, on_call_group


def code_for(user: Any, ahead: int = 0) -> str:
    """The code the person's authenticator shows now (`ahead` steps later: a code is accepted once)."""
    device = TOTPDevice.objects.get(user=user, confirmed=True)
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = dt.datetime.now(dt.UTC).timestamp() + ahead * device.step
    return f"{totp.token():06d}"


@pytest.fixture
def policies(classifications: dict[str, Any]) -> dict[str, Any]:
    """The default policies of the data migration (re-seeded after a transactional test's flush)."""
    from breakglass.models import BreakGlassPolicy

    seed = importlib.import_module("breakglass.migrations.0002_default_policies")
    for slug, values in seed.DEFAULTS.items():
        BreakGlassPolicy.objects.update_or_create(classification=classifications[slug], defaults=values)
    return {p.classification.slug: p for p in BreakGlassPolicy.objects.select_related("classification")}


@pytest.fixture
def make_on_call(make_user: Callable[..., Any]) -> Callable[..., Any]:
    def make(username: str = "oncall", *groups: str, device: bool = True) -> Any:
        Group.objects.get_or_create(name=on_call_group())
        user = make_user(username, REQUESTERS, on_call_group(), *groups)
        if device:
            TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
        return user

    return make


@pytest.fixture
def on_call(make_on_call: Callable[..., Any]) -> Any:
    return make_on_call()


@pytest.fixture
def officers(make_user: Callable[..., Any]) -> list[Any]:
    return [make_user("officer1", SECURITY_OFFICERS, REQUESTERS), make_user("officer2", SECURITY_OFFICERS, REQUESTERS)]
