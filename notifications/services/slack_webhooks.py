"""A team's Slack webhook (an admin edits it): the one write path, audited; the URL is encrypted
(governance.crypto) and never written to the audit trail."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction

from accounts.roles import administers_sources
from audit import services as audit
from governance.errors import InvalidInput, NotPermitted
from governance.services.common import refusal_recorded, sealed

from ..models import SlackWebhook


def slack_webhook_set(*, actor: Any, team: Any, channel: str, url: str = "", is_active: bool = True) -> SlackWebhook:
    """Create or change `team`'s webhook. An empty `url` keeps the stored one (it is never shown)."""
    url = (url or "").strip()
    with refusal_recorded(action="slack_webhook.set", actor=actor, target=team), transaction.atomic():
        if not administers_sources(actor):
            raise NotPermitted("Only governance admins can set a team's Slack webhook.")
        if url and not url.startswith(settings.SLACK_HOOKS_URL_PREFIX):
            raise InvalidInput(f"A Slack webhook URL starts with {settings.SLACK_HOOKS_URL_PREFIX}.", field="url")
        hook = SlackWebhook.objects.select_for_update().filter(team=team).first()
        if hook is None and not url:
            raise InvalidInput("Paste the webhook URL Slack gave you.", field="url")
        hook = hook or SlackWebhook(team=team)
        before = {"channel": hook.channel, "is_active": hook.is_active}
        hook.channel, hook.is_active = channel.strip()[:80], is_active
        if url:
            hook.url_encrypted = sealed(url, field="url", what="The webhook URL")
        created = hook._state.adding
        hook.save()
        audit.record(
            action="slack_webhook.created" if created else "slack_webhook.changed",
            actor=actor,
            target=hook,
            changes=audit.diff(before, {"channel": hook.channel, "is_active": hook.is_active}),
            metadata={"team": str(team), "url_changed": bool(url)},  # the URL is a secret
        )
    return hook
