"""Last-used facts, as people read them: per grant, when it was last used, or since when no use was
seen, or why its source cannot tell; and whether it is flagged as unused (revoke suggested).

The one place the rule lives (docs/usage.md): a grant in force for `USAGE_UNUSED_DAYS` (90) days
is flagged when its source can tell and has seen no use of it for that long: its last seen use,
and the start of the source's unbroken observation, are both older. A source that cannot tell
flags nothing. Written by governance/services/usage.py.
Other apps (access reviews, compliance) call :func:`last_use_for_grants`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.utils import timezone

from ..models import Grant


class UseState(StrEnum):
    USED = "used"
    NOT_SEEN = "not_seen"
    CANNOT_TELL = "cannot_tell"


@dataclass(frozen=True)
class LastUse:
    """What the portal knows of one grant's use."""

    state: UseState
    last_used_at: dt.datetime | None = None  # USED
    used_as: str = ""  # USED: the target role or IAM identity seen
    since: dt.datetime | None = None  # NOT_SEEN: no use seen since then
    reason: str = ""  # CANNOT_TELL: why
    flagged: bool = False  # unused for USAGE_UNUSED_DAYS: revoke suggested

    @property
    def text(self) -> str:
        """One line for pages and CSV."""
        if self.state == UseState.USED and self.last_used_at is not None:
            return f"Last used {timezone.localtime(self.last_used_at):%Y-%m-%d %H:%M}"
        if self.state == UseState.NOT_SEEN and self.since is not None:
            return f"No use seen since {timezone.localtime(self.since):%Y-%m-%d}"
        return f"Cannot tell: {self.reason}"

    @property
    def suggestion(self) -> str:
        days = settings.USAGE_UNUSED_DAYS
        return f"Unused for {days} days or more: consider revoking it." if self.flagged else ""

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "last_used_at": self.last_used_at,
            "used_as": self.used_as,
            "no_use_seen_since": self.since,
            "cannot_tell_reason": self.reason,
            "flagged_unused": self.flagged,
            "text": self.text,
        }


NOT_READ_YET = "the source's use has not been read yet."

# What a grant list selects (select_related) so that last_use_of() needs no query.
WITH_USAGE = ("usage", "dataset__source__usage")

# The values one LastUse is computed from (read by last_use_for_grants and the access report alike).
USAGE_FIELDS = (
    "starts_at",
    "ends_at",
    "revoked_at",
    "usage__last_used_at",
    "usage__used_as",
    "dataset__source__usage__can_tell",
    "dataset__source__usage__reason",
    "dataset__source__usage__observed_since",
)


def describe(values: Sequence[Any], *, now: dt.datetime) -> LastUse:
    """The LastUse of one grant from its USAGE_FIELDS values, in that order."""
    starts_at, ends_at, revoked_at, last_used_at, used_as, can_tell, reason, observed_since = values
    threshold = now - dt.timedelta(days=settings.USAGE_UNUSED_DAYS)
    in_force = revoked_at is None and starts_at <= now < ends_at
    watching = bool(can_tell) and observed_since is not None
    # Known unused since: the last use seen, or the start of unbroken observation if later (a use
    # during a gap, while the source could not tell or before a reset, would not have been seen).
    quiet_since = max(last_used_at or observed_since, observed_since) if watching else None
    flagged = in_force and starts_at <= threshold and quiet_since is not None and quiet_since <= threshold
    if last_used_at is not None:
        return LastUse(UseState.USED, last_used_at=last_used_at, used_as=used_as or "", flagged=flagged)
    if not watching:  # can_tell None: no reading yet
        return LastUse(UseState.CANNOT_TELL, reason=reason or NOT_READ_YET)
    return LastUse(UseState.NOT_SEEN, since=max(observed_since, starts_at), flagged=flagged)


def last_use_for_grants(grant_ids: Iterable[int], *, now: dt.datetime | None = None) -> dict[int, LastUse]:
    """Each grant's LastUse, in one query whatever their number (grants not found are left out)."""
    at = now or timezone.now()
    rows = Grant.objects.filter(pk__in=list(grant_ids)).values_list("pk", *USAGE_FIELDS)
    return {pk: describe(values, now=at) for pk, *values in rows}


def _usage_values(grant: Grant) -> list[Any]:
    """USAGE_FIELDS of a grant loaded with its usage and its source's usage (no query)."""
    usage = related_or_none(grant, "usage")
    state = related_or_none(grant.dataset.source, "usage")
    values = {
        "starts_at": grant.starts_at,
        "ends_at": grant.ends_at,
        "revoked_at": grant.revoked_at,
        "usage__last_used_at": usage.last_used_at if usage else None,
        "usage__used_as": usage.used_as if usage else None,
        "dataset__source__usage__can_tell": state.can_tell if state else None,
        "dataset__source__usage__reason": state.reason if state else None,
        "dataset__source__usage__observed_since": state.observed_since if state else None,
    }
    return [values[f] for f in USAGE_FIELDS]


def related_or_none(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name)
    except ObjectDoesNotExist:  # no row (select_related cached its absence: no query)
        return None


def last_use_of(grant: Grant, *, now: dt.datetime | None = None) -> LastUse:
    """The LastUse of a grant loaded with :data:`WITH_USAGE` (select_related: no query)."""
    return describe(_usage_values(grant), now=now or timezone.now())
