"""Durations of access: in hours or days, said in words, never below the configured floor.

A policy (Classification) bounds requests by a shortest and a longest duration; a request asks for a
number of hours or days. `GRANT_MIN_DURATION_FLOOR_SECONDS` (an hour in production) is the least
any policy or request may say: tests lower it to a few seconds to watch a grant end for real.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
UNITS = {"hours": HOUR, "days": DAY}
UNIT_CHOICES = [("hours", "hours"), ("days", "days")]
LONGEST = dt.timedelta(days=3650)
# The largest number a duration field accepts, per unit (ten years, as LONGEST).
MAX_DAYS = LONGEST.days
MAX_HOURS = int(LONGEST / HOUR)


def floor() -> dt.timedelta:
    """The shortest duration anything may say (GRANT_MIN_DURATION_FLOOR_SECONDS)."""
    return dt.timedelta(seconds=settings.GRANT_MIN_DURATION_FLOOR_SECONDS)


def of(amount: int | float, unit: str) -> dt.timedelta:
    """`amount` hours or days (ValueError for another unit)."""
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}")
    return UNITS[unit] * amount


def _part(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def words(duration: dt.timedelta | None) -> str:
    """ "6 hours", "14 days", "1 day 6 hours", "90 seconds": what a person reads."""
    if duration is None:
        return ""
    seconds = int(duration.total_seconds())
    if seconds <= 0:
        return "0 seconds"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if days:
        parts.append(_part(days, "day"))
    if hours:
        parts.append(_part(hours, "hour"))
    if minutes:
        parts.append(_part(minutes, "minute"))
    if secs:
        parts.append(_part(secs, "second"))
    return " ".join(parts)


def split(duration: dt.timedelta) -> tuple[int, str]:
    """A duration as the form's (number, unit): whole days as days, else whole hours (rounded up)."""
    seconds = int(duration.total_seconds())
    if seconds % 86400 == 0:
        return seconds // 86400, "days"
    return max(1, -(-seconds // 3600)), "hours"
