"""When a recurring campaign starts next: monthly, quarterly or a five-field cron expression (UTC).

Parsed with Celery's own crontab parser (the one the beat schedule uses), so an expression valid in
CELERY_BEAT_SCHEDULE is valid here; the next time is searched day by day (at most five years).
"""

from __future__ import annotations

import datetime as dt

from celery.schedules import ParseException, crontab

from governance.errors import InvalidInput

from .models import Recurrence

PRESETS = {
    Recurrence.MONTHLY: "0 6 1 * *",  # the 1st of every month, 06:00 UTC
    Recurrence.QUARTERLY: "0 6 1 1,4,7,10 *",  # the 1st of January, April, July and October
}


def expression(recurrence: str, cron: str) -> str | None:
    """The cron expression of a recurrence; None for a one-off."""
    if recurrence == Recurrence.ONCE:
        return None
    if recurrence == Recurrence.CRON:
        return cron.strip()
    return PRESETS[Recurrence(recurrence)]


def parse(expr: str) -> crontab:
    """A crontab, or InvalidInput naming the `cron` field."""
    fields = expr.split()
    if len(fields) != 5:
        raise InvalidInput("A cron expression has five fields: minute hour day-of-month month weekday.", field="cron")
    minute, hour, day_of_month, month, weekday = fields
    try:
        return crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month, day_of_week=weekday)
    except (ParseException, ValueError) as exc:
        raise InvalidInput(f"Not a valid cron expression: {exc}", field="cron") from exc


def next_after(expr: str, after: dt.datetime) -> dt.datetime:
    """The first time strictly after `after` that the expression names (UTC)."""
    tab = parse(expr)
    # The parsed sets (Celery sets these attributes in __init__; its stubs do not declare them).
    minutes, hours = sorted(getattr(tab, "minute")), sorted(getattr(tab, "hour"))  # noqa: B009
    days, weekdays, months = getattr(tab, "day_of_month"), getattr(tab, "day_of_week"), getattr(tab, "month_of_year")  # noqa: B009
    start = after.astimezone(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    day = start.date()
    for _ in range(366 * 5):
        # Cron's rule: when both day-of-month and weekday are restricted, either one matches.
        weekday = (day.weekday() + 1) % 7  # cron counts from Sunday = 0
        dom_ok, dow_ok = day.day in days, weekday in weekdays
        restricted_both = len(days) < 31 and len(weekdays) < 7
        if day.month in months and ((dom_ok or dow_ok) if restricted_both else (dom_ok and dow_ok)):
            for hour in hours:
                for minute in minutes:
                    at = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC)
                    if at >= start:
                        return at
        day += dt.timedelta(days=1)
    raise InvalidInput("This cron expression names no time in the next five years.", field="cron")
