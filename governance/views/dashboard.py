"""The dashboard: what waits, what ends soon, what is in force and what went wrong, as charts.

Charts are inline SVG drawn on the server (no JavaScript, no chart library): each has a title and a
description for screen readers, and its numbers in a table next to it. Officers, governance admins
and auditors see everything; owners see their datasets; everyone else sees their own requests and
grants. Seven aggregate queries whatever the volume (the seventh counts the PII suggestions waiting
for the person's review), and three more for the operators: the revocations
that are overdue, the grants approved under a weaker classification than their dataset has today,
and the data sources that do not answer the workers, with their waiting jobs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from accounts.roles import sees_everything

from ..models import (
    AccessRequest,
    Dataset,
    DriftFinding,
    Grant,
    GrantStatus,
    JobStatus,
    ProvisioningJob,
    RequestState,
    SourceHealth,
)
from ..selectors.catalog import datasets_approvable_by
from ..selectors.health import sources_unreachable
from ..selectors.lineage import grants_approved_under_weaker_policy
from ..selectors.stewardship import suggestions_for
from ..services.engine.sweep import overdue_revocations

BAR_WIDTH = 360  # px of the longest bar in a horizontal chart
COLUMN_HEIGHT = 120  # px of the tallest column in a time chart
COLUMNS_WIDTH = 480  # px of a time chart, whatever its number of columns


@dataclass
class Bar:
    label: str
    value: int
    css: str
    x: float = 0
    y: float = 0
    w: float = 0
    h: float = 0


@dataclass
class Chart:
    id: str
    title: str
    description: str
    kind: str  # "bars" (horizontal) | "columns" (one per day)
    bars: list[Bar]
    width: int = 0
    height: int = 0

    @property
    def total(self) -> int:
        return sum(b.value for b in self.bars)


def _layout(chart: Chart) -> Chart:
    top = max((b.value for b in chart.bars), default=0) or 1
    if chart.kind == "bars":
        for i, b in enumerate(chart.bars):
            b.x, b.y, b.h = 130, i * 34 + 4, 24
            b.w = round(max(2 if b.value else 0, b.value / top * BAR_WIDTH), 1)
        chart.width, chart.height = 130 + BAR_WIDTH + 60, len(chart.bars) * 34 + 8
    else:
        step = (COLUMNS_WIDTH - 16) / max(1, len(chart.bars))
        for i, b in enumerate(chart.bars):
            b.h = round(max(2 if b.value else 0, b.value / top * COLUMN_HEIGHT), 1)
            b.x, b.w = round(i * step + 12, 1), round(step * 0.7, 1)
            b.y = 22 + COLUMN_HEIGHT - b.h
        chart.width, chart.height = COLUMNS_WIDTH, COLUMN_HEIGHT + 62
    return chart


def _scopes(user: Any) -> tuple[Q, Q, Q, str]:
    """Filters for requests, grants and datasets; and whose numbers these are, in words."""
    if sees_everything(user):
        return Q(), Q(), Q(), "all datasets"
    owned = datasets_approvable_by(user).values("pk")
    if datasets_approvable_by(user).exists():
        return Q(dataset__in=owned), Q(dataset__in=owned), Q(pk__in=owned), "the datasets you govern"
    mine = Q(requester=user) | Q(grantee_user=user)
    return mine, Q(grantee_user=user), Q(pk__in=[]), "your own requests and grants"


def _unreachable_sources(user: Any) -> list[SourceHealth] | None:
    """For those who see everything (the operators): the data sources that do not answer the
    workers, with their waiting jobs, in one query. None for everyone else (no panel)."""
    if not sees_everything(user):
        return None
    return list(sources_unreachable())


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    requests_q, grants_q, datasets_q, scope = _scopes(request.user)
    day = dt.timedelta(days=1)

    pending = AccessRequest.objects.filter(requests_q, state=RequestState.PENDING).aggregate(
        under_1=Count("pk", filter=Q(submitted_at__gt=now - day)),
        d1_3=Count("pk", filter=Q(submitted_at__lte=now - day, submitted_at__gt=now - 3 * day)),
        d3_7=Count("pk", filter=Q(submitted_at__lte=now - 3 * day, submitted_at__gt=now - 7 * day)),
        over_7=Count("pk", filter=Q(submitted_at__lte=now - 7 * day)),
    )
    ages = _layout(
        Chart(
            "pending-age",
            "Pending requests by age",
            "How long the requests that still wait for a decision have waited.",
            "bars",
            [
                Bar("under a day", pending["under_1"], "c-ok"),
                Bar("1 to 3 days", pending["d1_3"], "c-info"),
                Bar("3 to 7 days", pending["d3_7"], "c-warn"),
                Bar("over 7 days", pending["over_7"], "c-bad"),
            ],
        )
    )

    today = timezone.localdate(now)
    ending = dict(
        Grant.objects.active(now)
        .filter(grants_q, ends_at__lte=now + 7 * day)
        .annotate(day=TruncDate("ends_at", tzinfo=timezone.get_current_timezone()))
        .values_list("day")
        .annotate(n=Count("pk"))
        .values_list("day", "n")
    )
    expiring = _layout(
        Chart(
            "expiring",
            "Grants expiring in the next 7 days",
            "Grants in force that end within 7 days, by the day they end (today first).",
            "columns",
            [Bar(f"{d:%a %d}", ending.get(d, 0), "c-info") for d in (today + dt.timedelta(days=i) for i in range(8))],
        )
    )

    by_class = (
        Grant.objects.active(now)
        .filter(grants_q)
        .exclude(status=GrantStatus.FAILED)
        .values_list("dataset__classification__name", "dataset__classification__rank")
        .annotate(n=Count("pk"))
        .order_by("dataset__classification__rank")
    )
    classes = _layout(
        Chart(
            "by-classification",
            "Grants in force by classification",
            "How much access is open on data of each classification.",
            "bars",
            [Bar(name, n, f"c-rank-{rank}") for name, rank, n in by_class],
        )
    )

    first_day = timezone.make_aware(dt.datetime.combine(today - dt.timedelta(days=13), dt.time()))
    failed_jobs = ProvisioningJob.objects.filter(status=JobStatus.FAILED, finished_at__gte=first_day)
    drift_open = DriftFinding.objects.open()
    if grants_q.children:  # scoped: jobs of the grants in scope, drift on the datasets in scope
        failed_jobs = failed_jobs.filter(grant__in=Grant.objects.filter(grants_q))
        drift_open = drift_open.filter(dataset__in=Dataset.objects.filter(datasets_q))
    failed_days = dict(
        failed_jobs.annotate(day=TruncDate("finished_at", tzinfo=timezone.get_current_timezone()))
        .values_list("day")
        .annotate(n=Count("pk"))
        .values_list("day", "n")
    )
    failures = _layout(
        Chart(
            "failures",
            "Provisioning failures, last 14 days",
            "Jobs that gave up after their retries, per day; each needs a look (and a retry) in the workbench.",
            "columns",
            [
                Bar(f"{d:%d}", failed_days.get(d, 0), "c-bad")
                for d in (today - dt.timedelta(days=13 - i) for i in range(14))
            ],
        )
    )

    drift_rows = drift_open.values_list("source__name").annotate(n=Count("pk")).order_by("-n", "source__name")
    drift = _layout(
        Chart(
            "drift",
            "Open drift findings by source",
            "Privileges on the targets that disagree with the portal, still open.",
            "bars",
            [Bar(name, n, "c-bad") for name, n in drift_rows],
        )
    )
    operations = None
    if sees_everything(request.user):
        # What an operator must look at now, with the admin pages where it is handled (officers and
        # governance admins act there; auditors read).
        operations = {
            "overdue": overdue_revocations(now).count(),
            "weaker": grants_approved_under_weaker_policy().count(),
            "failed": failures.total,
            "drift": drift.total,
        }
    context = {
        "scope": scope,
        "operations": operations,
        "charts": [ages, expiring, classes, failures, drift],
        "headline": {
            "pending": ages.total,
            "expiring": expiring.total,
            "active": classes.total,
            "failures": failures.total,
            "drift": drift.total,
        },
        "health": _unreachable_sources(request.user),
        # PII suggestions on the datasets this person stewards (all, for those who see everything):
        # the queue is where they are decided, and a steward who is not staff finds it from here.
        "suggestions_waiting": suggestions_for(request.user).count(),
        "nav": "dashboard",
    }
    return render(request, "portal/dashboard.html", context)
