"""The dashboard's card of data-subject requests due within a week or overdue (docs/subjects.md):
shown to those who see requests (privacy officers, security officers, governance admins,
auditors); nothing, and no query, for anyone else."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils import timezone

from ..selectors import may_see_requests, requests_due

register = template.Library()


@register.inclusion_tag("subjects/_due.html", takes_context=True)
def subject_requests_due(context: dict[str, Any]) -> dict[str, Any]:
    user = context["request"].user
    if not may_see_requests(user):
        return {"show": False}
    now = timezone.now()
    due = list(requests_due(user, now=now)[:20])
    return {"show": True, "due": due, "now": now}
