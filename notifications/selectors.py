"""Who hears of what: every recipient of a notification is computed here (approval routing itself
is governance's: `access_request_deciders` asks the approvers' inbox selector)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, QuerySet

from accounts.roles import GOVERNANCE_ADMINS, PRIVACY_OFFICERS, SECURITY_OFFICERS
from governance.models import Grant

from .models import Delivery, DeliveryStatus, Preference, SlackLink, SlackWebhook
from .slack import WEBHOOK_PREFIX


def governance_admins() -> QuerySet[Any]:
    """The people who operate provisioning and the sources: told of failures and overdue revocations."""
    return get_user_model().objects.filter(groups__name=GOVERNANCE_ADMINS, is_active=True).distinct().order_by("pk")


def security_officers() -> QuerySet[Any]:
    """The security officers: told at once of every break of the glass."""
    return get_user_model().objects.filter(groups__name=SECURITY_OFFICERS, is_active=True).distinct().order_by("pk")


def privacy_officers() -> QuerySet[Any]:
    """The privacy officers: told of data-subject requests' deadlines (docs/subjects.md)."""
    return get_user_model().objects.filter(groups__name=PRIVACY_OFFICERS, is_active=True).distinct().order_by("pk")


def people_of_grant(grant: Grant) -> list[Any]:
    """Whose access it is: the grantee, or for a role the role's owner and whoever asked for it
    (load `grantee_user`, `grantee_role__owner` and `source_request__requester` with it)."""
    if grant.grantee_user_id is not None:
        candidates = [grant.grantee_user]
    else:
        request = grant.source_request
        candidates = [grant.grantee_role.owner if grant.grantee_role else None, request.requester if request else None]
    people: dict[int, Any] = {}
    for person in candidates:
        if person is not None and person.is_active:
            people.setdefault(person.pk, person)
    return list(people.values())


def preferences_of(user_ids: list[int]) -> dict[int, Preference]:
    """Each person's preferences; a person without a row gets the defaults (email, at once, nothing muted)."""
    found = {p.user_id: p for p in Preference.objects.filter(user_id__in=user_ids)}
    return {pk: found.get(pk) or Preference(user_id=pk) for pk in user_ids}


def immediate_today(kind: str, user_ids: list[int], now: dt.datetime) -> dict[int, int]:
    """How many `kind` messages each person was sent on their own (not in a digest) in the last 24 hours."""
    rows = (
        Delivery.objects.filter(
            kind=kind,
            recipient_id__in=user_ids,
            created_at__gte=now - dt.timedelta(days=1),
            status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.SENT],
        )
        .values("recipient_id")
        .annotate(n=Count("id"))
        .values_list("recipient_id", "n")
    )
    return dict(rows)


def held_recipients() -> list[tuple[int, str]]:
    """(person, channel) pairs with deliveries held for their digest."""
    return list(
        Delivery.objects.filter(status=DeliveryStatus.HELD)
        .values_list("recipient_id", "channel")
        .distinct()
        .order_by("recipient_id", "channel")
    )


def slack_addresses(user_ids: list[int]) -> dict[int, str]:
    """Where each person is reached on Slack: their linked Slack user id (a direct message), else
    the webhook of a team of theirs (`webhook:<id>`); a person with neither is left out. Two queries."""
    found = dict(
        SlackLink.objects.filter(user_id__in=user_ids, slack_user_id__isnull=False).values_list(
            "user_id", "slack_user_id"
        )
    )
    rest = [pk for pk in user_ids if pk not in found]
    if rest:
        hooks = (
            SlackWebhook.objects.filter(is_active=True, team__memberships__user_id__in=rest)
            .order_by("team__name")
            .values_list("team__memberships__user_id", "pk")
        )
        for user_id, hook in hooks:
            found.setdefault(user_id, f"{WEBHOOK_PREFIX}{hook}")
    return {pk: str(v) for pk, v in found.items()}


def slack_link_of(user: Any) -> SlackLink | None:
    return SlackLink.objects.filter(user=user).first()
