"""The demo's break-glass use (`seed_demo_breakglass`, after `seed_demo`): the engineer on call opened
sales.orders through the real door, the use waits for the officer's review, and the engineer is left
without a second factor (the seed's single-use code is gone), so they still sign in with a password."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from accounts.mfa import has_device
from accounts.roles import is_on_call, is_privacy_officer
from audit.models import AuditEvent
from tests.catalog.test_seed_demo import warehouse_name  # noqa: F401 - the demo's own warehouse

pytestmark = pytest.mark.django_db(transaction=True)


def test_seed_demo_breakglass_leaves_a_use_to_review(
    warehouse_name: str,  # noqa: F811
    classifications: Any,
    policies: Any,
) -> None:
    with pytest.raises(CommandError, match="Run seed_demo first"):
        call_command("seed_demo_breakglass", stdout=io.StringIO())
    call_command("seed_demo", "--warehouse-db", warehouse_name, "--no-provisioning", stdout=io.StringIO())
    users = get_user_model().objects.in_bulk(["oncall", "officer", "privacy"], field_name="username")
    assert is_on_call(users["oncall"])
    assert is_privacy_officer(users["officer"]) and is_privacy_officer(users["privacy"])

    out = io.StringIO()
    call_command("seed_demo_breakglass", stdout=out)
    assert "oncall opened" in out.getvalue() and "review by officer" in out.getvalue()

    from breakglass.models import BreakGlassUse

    use = BreakGlassUse.objects.select_related("grant__dataset", "assigned_officer").get()
    assert use.assigned_officer is not None
    assert (use.user.username, use.assigned_officer.username) == ("oncall", "officer")
    assert use.grant.dataset.qualified_name.endswith("sales.orders")
    assert use.grant.emergency and use.reviewed_at is None
    assert AuditEvent.objects.filter(action="break_glass.activated", actor=users["oncall"]).count() == 1
    assert not has_device(users["oncall"]), "the seed's single-use code must not stay as a second factor"

    again = io.StringIO()
    call_command("seed_demo_breakglass", stdout=again)
    assert again.getvalue() == "break-glass: the demo use is there; none added\n"
    assert BreakGlassUse.objects.count() == 1
