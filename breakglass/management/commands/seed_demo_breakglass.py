"""`manage.py seed_demo_breakglass`: the demo's break of the glass (after `seed_demo`).

The demo engineer on call (`oncall`) broke the glass on `sales.orders` for an hour, for an incident;
the use waits for the review of a security officer (`officer`, its assigned reviewer), so the
officer's dashboard and the compliance page show a break-glass use to review, and the grant shows
its "break-glass" badge. The use is made through the real door (`break_glass_activate`: the policy
of Confidential data, the second factor, the grant through the approved-request path, the officers'
notice). The second factor is a single-use code the command makes for `oncall` and removes at once,
so `oncall` still signs in with the password alone and sets up an authenticator to break the glass
themselves (docs/break-glass.md). Idempotent: nothing is added once `oncall` has a use.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django_otp.plugins.otp_static.models import StaticDevice

from accounts.mfa import recovery_codes_reset
from audit.context import cli_context
from governance.errors import DomainError
from governance.models import Dataset

from ...models import BreakGlassUse
from ...services.activation import break_glass_activate

REASON = "INC-4711: checkout failures since 02:10; reading orders to find the failing payment provider"


class Command(BaseCommand):
    help = "The demo's break-glass use by the on-call engineer, waiting for review (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        oncall = get_user_model().objects.filter(username="oncall").first()
        orders = Dataset.objects.filter(schema="sales", name="orders", is_present=True).first()
        if oncall is None or orders is None:
            raise CommandError("Run seed_demo first: the demo engineer on call and sales.orders are missing.")
        if BreakGlassUse.objects.filter(user=oncall).exists():
            self.stdout.write("break-glass: the demo use is there; none added")
            return
        with cli_context("seed_demo_breakglass"):
            try:
                with transaction.atomic():
                    code = recovery_codes_reset(user=oncall, record=False)[0]
                    use = break_glass_activate(actor=oncall, dataset=orders, reason=REASON, hours=1, otp_token=code)
                    StaticDevice.objects.filter(user=oncall, name="recovery codes").delete()
            except DomainError as exc:
                raise CommandError(exc.message) from None
        officer = use.assigned_officer.username if use.assigned_officer else "nobody (no security officer)"
        self.stdout.write(
            f"break-glass: {oncall.username} opened {orders.qualified_name} for 1 h; review by {officer} "
            f"due {use.review_due_at:%Y-%m-%d %H:%M} UTC"
        )
