"""When recurring campaigns start next, and the demo's review (`seed_demo_reviews`)."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import call_command

from governance.errors import InvalidInput
from reviews.models import CampaignStatus, ReviewCampaign
from reviews.schedule import next_after
from tests.reviews.conftest import World

UTC = dt.UTC


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("0 6 1 1,4,7,10 *", dt.datetime(2026, 12, 7, 9, 0, tzinfo=UTC), dt.datetime(2027, 1, 1, 6, 0, tzinfo=UTC)),
        ("0 6 1 1,4,7,10 *", dt.datetime(2027, 1, 1, 6, 0, tzinfo=UTC), dt.datetime(2027, 4, 1, 6, 0, tzinfo=UTC)),
        ("0 6 1 * *", dt.datetime(2026, 12, 31, 23, 0, tzinfo=UTC), dt.datetime(2027, 1, 1, 6, 0, tzinfo=UTC)),
        # Mondays at 09:30: 7 December 2026 is a Monday, past 09:30.
        ("30 9 * * 1", dt.datetime(2026, 12, 7, 10, 0, tzinfo=UTC), dt.datetime(2026, 12, 14, 9, 30, tzinfo=UTC)),
        ("*/15 * * * *", dt.datetime(2026, 12, 7, 10, 7, tzinfo=UTC), dt.datetime(2026, 12, 7, 10, 15, tzinfo=UTC)),
    ],
)
def test_next_start_of_a_cron_expression(expr, after, expected):
    assert next_after(expr, after) == expected


@pytest.mark.parametrize("expr", ["61 * * * *", "* * *", "0 0 31 2 *", "a b c d e"])
def test_an_invalid_or_impossible_expression_names_the_cron_field(expr):
    with pytest.raises(InvalidInput) as exc:
        next_after(expr, dt.datetime(2026, 12, 7, tzinfo=UTC))
    assert exc.value.field == "cron"


@pytest.mark.django_db
def test_seed_demo_reviews_adds_the_quarterly_restricted_review_once(review_world: World, officer):
    out = io.StringIO()
    call_command("seed_demo_reviews", stdout=out)
    assert "first round open with 2 items" in out.getvalue()  # the two Restricted grants in force
    series = ReviewCampaign.objects.get(recurrence="quarterly")
    assert series.classification == review_world.restricted.classification and series.status == CampaignStatus.SCHEDULED
    again = io.StringIO()
    call_command("seed_demo_reviews", stdout=again)
    assert "already there" in again.getvalue() and ReviewCampaign.objects.count() == 2
