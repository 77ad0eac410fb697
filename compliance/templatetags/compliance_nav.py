"""`{% if user|sees_compliance %}`: whether the portal's navigation links the posture page."""

from __future__ import annotations

from typing import Any

from django import template

from accounts.roles import sees_everything

register = template.Library()


@register.filter
def sees_compliance(user: Any) -> bool:
    """Officers, governance admins, auditors and superusers (one cached group lookup per request)."""
    return sees_everything(user)
