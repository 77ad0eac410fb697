"""A break-glass use for tests that need one in a world made elsewhere (tests/api): the default
policies seeded, the person put on call with an authenticator, the glass broken on `dataset`."""

from __future__ import annotations

import importlib
from typing import Any

from django.contrib.auth.models import Group
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.roles import on_call_group
from tests.breakglass.conftest import code_for


def seed_policies() -> None:
    from breakglass.models import BreakGlassPolicy
    from governance.models import Classification

    seed = importlib.import_module("breakglass.migrations.0002_default_policies")
    for classification in Classification.objects.filter(slug__in=seed.DEFAULTS):
        BreakGlassPolicy.objects.update_or_create(
            classification=classification, defaults=seed.DEFAULTS[classification.slug]
        )


def put_on_call(user: Any) -> Any:
    group, _ = Group.objects.get_or_create(name=on_call_group())
    user.groups.add(group)
    if hasattr(user, "_portal_groups_cache"):
        del user._portal_groups_cache
    TOTPDevice.objects.get_or_create(user=user, confirmed=True, defaults={"name": "phone"})
    return user


def break_glass_use(user: Any, dataset: Any, *, reason: str = "INC-1: the nightly load failed", hours: Any = 2) -> Any:
    from breakglass.services.activation import break_glass_activate

    seed_policies()
    put_on_call(user)
    return break_glass_activate(actor=user, dataset=dataset, reason=reason, hours=hours, otp_token=code_for(user))
