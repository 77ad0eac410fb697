"""Break-glass where people look: the dashboard's card (uses to review, overdue, unused) and the
offer on a dataset's page for the on-call engineer. Governance's pages load these tags; governance's
Python never imports the break-glass app (layering: it builds on governance)."""

from __future__ import annotations

from typing import Any

from django import template

from accounts.roles import sees_everything

from ..selectors import may_break_glass_on, overdue_uses, unreviewed_uses, unused_uses

register = template.Library()

SHOWN = 10


@register.inclusion_tag("breakglass/_dashboard.html", takes_context=True)
def break_glass_dashboard(context: template.Context) -> dict[str, Any]:
    """For officers, admins and auditors: unreviewed (overdue first) and unused break-glass uses."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if not sees_everything(user):
        return {"shown": False}
    unreviewed = list(unreviewed_uses()[:SHOWN])
    return {
        "shown": True,
        "unreviewed": unreviewed,
        "overdue": overdue_uses().count(),
        "unused": list(unused_uses()[:SHOWN]),
    }


@register.inclusion_tag("breakglass/_offer.html", takes_context=True)
def break_glass_offer(context: template.Context, dataset: Any) -> dict[str, Any]:
    request = context.get("request")
    user = getattr(request, "user", None)
    return {"dataset": dataset, "offer": user is not None and may_break_glass_on(user, dataset)}
