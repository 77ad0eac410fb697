"""System checks: a delivery's lease must outlast one send, or a live worker's send could be
claimed by another and sent twice."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register
from django.core.checks import Warning as CheckWarning


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


@register(deploy=True)
def portal_url_reaches_people(app_configs: Any = None, **kwargs: Any) -> list[CheckWarning]:
    """Every link a message carries starts with PORTAL_URL: in production it must be the portal's
    public https address, not the development default."""
    from urllib.parse import urlsplit

    url = urlsplit(settings.PORTAL_URL)
    if url.scheme != "https" or url.hostname in (None, "localhost", "127.0.0.1", "::1"):
        return [
            CheckWarning(
                f"PORTAL_URL is {settings.PORTAL_URL!r}: the links in notifications would not reach people.",
                hint="Set PORTAL_URL to the portal's public https address, e.g. https://access.example.com.",
                id="notifications.W001",
            )
        ]
    return []
