"""Linking a portal account to a Slack user, once, with proof from both sides
(docs/notifications.md#linking):

1. the person, signed in to the portal, asks for a one-time code (`slack_link_code_issue`): only its
   SHA-256 is stored, it expires after SLACK_LINK_CODE_SECONDS and a new one replaces it;
2. the person sends it from Slack with the portal's slash command; Slack's request is signed with
   the app's signing secret and names the Slack user who typed it (`slack_link_confirm`).

Whoever holds the code is the signed-in portal user (only that session saw it), and the Slack user
id comes from Slack, not from the person: the link joins the two. Every step is audited."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import services as audit
from governance.errors import ConflictError, InvalidInput, NotPermitted
from governance.services.common import refusal_recorded

from ..models import SlackLink

_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read off a screen and typed
CODE_LENGTH = 10


def _hash(code: str) -> str:
    return hashlib.sha256(code.strip().upper().encode()).hexdigest()


def slack_link_code_issue(*, user: Any) -> str:
    """A new one-time code for `user` to send from Slack (shown once; replaces any earlier one)."""
    with refusal_recorded(action="slack_link.code_issue", actor=user, target=user), transaction.atomic():
        if user is None or not user.is_active:
            raise NotPermitted("Only an active user can link a Slack account.")
        code = "".join(secrets.choice(_ALPHABET) for _ in range(CODE_LENGTH))
        link = SlackLink.objects.select_for_update().filter(user=user).first() or SlackLink(user=user)
        link.code_hash = _hash(code)
        link.code_expires_at = timezone.now() + dt.timedelta(seconds=settings.SLACK_LINK_CODE_SECONDS)
        link.save()
        audit.record(
            action="slack_link.code_issued", actor=user, target=user, metadata={"expires_at": link.code_expires_at}
        )
    return code


def slack_link_confirm(*, code: str, slack_user_id: str, slack_team_id: str = "") -> Any:
    """Link the Slack user who sent `code` (as Slack's signed request says) to the portal user the
    code was issued to; returns that user. A wrong, used or expired code links nobody."""
    slack_user_id = (slack_user_id or "").strip()
    with (
        refusal_recorded(
            action="slack_link.confirm", actor=None, metadata={"slack_user_id": slack_user_id, "source": "slack"}
        ),
        transaction.atomic(),
    ):
        if not slack_user_id:
            raise InvalidInput("Slack did not say who sent the code.", field="user_id")
        link = (
            SlackLink.objects.select_for_update(of=("self",))
            .select_related("user")
            .filter(code_hash=_hash(code or ""), code_expires_at__gt=timezone.now())
            .exclude(code_hash="")
            .first()
        )
        if link is None or not link.user.is_active:
            raise InvalidInput(
                "That code is wrong or has expired: ask the portal's Slack page for a new one.", field="text"
            )
        before = link.slack_user_id
        link.slack_user_id, link.slack_team_id = slack_user_id, (slack_team_id or "")[:32]
        link.linked_at = timezone.now()
        link.code_hash, link.code_expires_at = "", None  # one-shot
        try:
            with transaction.atomic():
                link.save()
        except IntegrityError:
            raise ConflictError("This Slack account is already linked to another portal account.") from None
        audit.record(
            action="slack_link.linked",
            actor=link.user,
            target=link.user,
            changes={"slack_user_id": [before, slack_user_id]},
            metadata={"slack_user_id": slack_user_id, "slack_team_id": link.slack_team_id, "source": "slack"},
        )
    return link.user


def slack_link_remove(*, user: Any, actor: Any) -> None:
    """Forget `user`'s Slack account: no more direct messages, no more decisions from Slack."""
    with refusal_recorded(action="slack_link.remove", actor=actor, target=user), transaction.atomic():
        if actor is None or actor.pk != user.pk:
            raise NotPermitted("Only the person themselves can unlink their Slack account.")
        link = SlackLink.objects.select_for_update().filter(user=user).first()
        if link is None or not link.slack_user_id:
            return
        audit.record(
            action="slack_link.removed", actor=actor, target=user, changes={"slack_user_id": [link.slack_user_id, None]}
        )
        link.delete()


def slack_request_refuse(*, endpoint: str, reason: str, ip: str | None = None) -> None:
    """Record a request to a Slack endpoint that was refused before anyone could be named (no or a
    bad signature, a stale timestamp): who sends forged or replayed callbacks is worth knowing."""
    with transaction.atomic():
        audit.record(
            action="slack.request_refused",
            actor=None,
            target_type="slack.endpoint",
            target_id=endpoint,
            target_repr=f"Slack {endpoint} endpoint",
            outcome="denied",
            reason=reason,
            metadata={"source": "slack", "ip": ip},
        )
