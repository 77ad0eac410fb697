"""The dashboard's card of data-subject requests due within a week or overdue (docs/subjects.md):
shown to those who see requests (privacy officers, security officers, governance admins,
auditors); nothing, and no query, for anyone else. And the navigation's two links: the requests
(`user|sees_subject_requests`) and the self-service list (`user|files_subject_requests`)."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils import timezone

from accounts.roles import sees_everything

from ..permissions import handles_subject_requests
from ..selectors import may_see_requests, requests_due
from ..services.self_service import self_service_enabled

register = template.Library()


@register.inclusion_tag("subjects/_due.html", takes_context=True)
def subject_requests_due(context: dict[str, Any]) -> dict[str, Any]:
    user = context["request"].user
    if not may_see_requests(user):
        return {"show": False}
    now = timezone.now()
    due = list(requests_due(user, now=now)[:20])
    return {"show": True, "due": due, "now": now}


@register.filter
def sees_subject_requests(user: Any) -> bool:
    """The officers' readers first, as the compliance link asks them (one cached group lookup per
    request; none for a superuser), then privacy officers."""
    return sees_everything(user) or handles_subject_requests(user)


@register.filter
def files_subject_requests(user: Any) -> bool:
    """The self-service list, when SUBJECTS_SELF_SERVICE is on (no query)."""
    return self_service_enabled() and bool(getattr(user, "is_authenticated", False))
