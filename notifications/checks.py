"""System checks: a delivery's lease must outlast one send, or a live worker's send could be
claimed by another and sent twice."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def lease_outlasts_a_send(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    timeout = getattr(settings, "EMAIL_TIMEOUT", None)
    lease = settings.NOTIFICATIONS_LEASE_SECONDS
    if timeout is None or timeout >= lease:
        return [
            Error(
                f"NOTIFICATIONS_LEASE_SECONDS ({lease}) must be longer than EMAIL_TIMEOUT ({timeout}).",
                hint="A send that may take longer than its lease can be claimed again and sent twice.",
                id="notifications.E001",
            )
        ]
    return []
