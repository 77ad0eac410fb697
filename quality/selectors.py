"""Reads of the quality app, shaped for the pages, the API and the badges.

Check definitions, statuses and results are catalog metadata (every signed-in user sees them: people
decide whether to ask for data by its quality). A profile's values (min, max, most common values of
columns without PII) are data: only the dataset's owner and stewards, governance admins, security
officers, auditors and people holding active access to it see them; others see the counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet
from django.utils import timezone

from accounts.roles import sees_everything
from governance.models import Dataset, Grant
from governance.policy import holds_dataset_perm

from .models import (
    CheckStatus,
    ColumnProfile,
    DatasetQuality,
    IntegrityFinding,
    IntegritySnapshot,
    IntegrityWatch,
    QualityCheck,
    QualityResult,
    QualityRun,
    QualityStatus,
)
from .permissions import may_define_checks

HISTORY = 30  # runs in a dataset's trend


def checks_of(dataset: Dataset) -> QuerySet[QualityCheck]:
    return QualityCheck.objects.filter(dataset=dataset).select_related("created_by", "reviewed_by").order_by("name")


def checks_visible_to(user: Any) -> QuerySet[QualityCheck]:
    return QualityCheck.objects.select_related("dataset__source", "created_by", "reviewed_by").order_by(
        "dataset__source__name", "dataset__schema", "dataset__name", "name", "pk"
    )


def runs_visible_to(user: Any) -> QuerySet[QualityRun]:
    return QualityRun.objects.select_related("dataset__source", "actor").prefetch_related(
        Prefetch("results", queryset=QualityResult.objects.select_related("check_ref").order_by("check_ref__name"))
    )


def states_visible_to(user: Any) -> QuerySet[DatasetQuality]:
    return DatasetQuality.objects.select_related("dataset__source").order_by(
        "dataset__source__name", "dataset__schema", "dataset__name"
    )


def may_see_profile_values(user: Any, dataset: Dataset) -> bool:
    if user is None or not getattr(user, "is_active", False):
        return False
    if sees_everything(user) or holds_dataset_perm(user, dataset, "steward_dataset"):
        return True
    now = timezone.now()
    return Grant.objects.active(now).filter(dataset=dataset, grantee_user=user).exists()


@dataclass(frozen=True)
class Summary:
    """What a badge shows: the status, how many checks fail of how many, when it last ran."""

    status: str
    failing: int
    checks: int
    last_run_at: Any
    integrity_findings: int = 0

    @property
    def label(self) -> str:
        if self.integrity_findings:
            extra = f"{self.failing} of {self.checks} checks failing, " if self.failing else ""
            return f"{extra}changed where it must not (integrity)"
        if self.status == QualityStatus.FAILING:
            return f"{self.failing} of {self.checks} checks failing"
        if self.status == QualityStatus.PASSING:
            return f"{self.checks} checks passing"
        if self.status == QualityStatus.ERROR:
            return "checks could not run"
        return "not checked yet" if self.checks else "no checks"


def summaries(dataset_ids: list[int]) -> dict[int, Summary]:
    """Badges for many datasets in three queries (the catalog list, the inbox): checks, states, open
    integrity findings (a dataset changed where it must not shows as failing until accepted)."""
    counts = dict(
        QualityCheck.objects.filter(dataset_id__in=dataset_ids, enabled=True)
        .values_list("dataset_id")
        .annotate(n=Count("pk"))
        .values_list("dataset_id", "n")
    )
    states = {s.dataset_id: s for s in DatasetQuality.objects.filter(dataset_id__in=dataset_ids)}
    findings = dict(
        IntegrityFinding.objects.filter(dataset_id__in=dataset_ids, resolved_at__isnull=True)
        .values_list("dataset_id")
        .annotate(n=Count("pk"))
        .values_list("dataset_id", "n")
    )
    out: dict[int, Summary] = {}
    for pk in dataset_ids:
        state = states.get(pk)
        n, changed = counts.get(pk, 0), findings.get(pk, 0)
        if state is None:
            out[pk] = Summary(QualityStatus.UNKNOWN, 0, n, None)
        else:
            status = QualityStatus.FAILING if changed else state.status
            out[pk] = Summary(status, state.failing_checks, n, state.last_run_at, changed)
    return out


@dataclass(frozen=True)
class IntegrityView:
    watch: IntegrityWatch | None
    last: IntegritySnapshot | None
    open: list[IntegrityFinding]


@dataclass(frozen=True)
class DatasetQualityView:
    summary: Summary
    integrity: IntegrityView
    checks: list[QualityCheck]
    trend: list[QualityRun]  # oldest first, for the chart
    profile: list[ColumnProfile]
    show_values: bool
    may_define: bool


def dataset_quality(dataset: Dataset, user: Any) -> DatasetQualityView:
    runs = list(
        QualityRun.objects.filter(dataset=dataset)
        .annotate(failing=Count("results", filter=Q(results__status=CheckStatus.FAIL)), measured=Count("results"))
        .order_by("-started_at", "-pk")[:HISTORY]
    )
    profile = list(ColumnProfile.objects.filter(run=runs[0]).order_by("column")) if runs else []
    integrity = IntegrityView(
        watch=IntegrityWatch.objects.filter(dataset=dataset).first(),
        last=IntegritySnapshot.objects.filter(dataset=dataset).order_by("-taken_at", "-pk").first(),
        open=list(IntegrityFinding.objects.filter(dataset=dataset, resolved_at__isnull=True).order_by("-found_at")),
    )
    return DatasetQualityView(
        summary=summaries([dataset.pk])[dataset.pk],
        integrity=integrity,
        checks=list(checks_of(dataset)),
        trend=list(reversed(runs)),
        profile=profile,
        show_values=may_see_profile_values(user, dataset),
        may_define=may_define_checks(user, dataset),
    )


def failing_datasets(limit: int = 20) -> QuerySet[DatasetQuality]:
    return (
        DatasetQuality.objects.filter(status=QualityStatus.FAILING)
        .select_related("dataset__source", "dataset__owner")
        .order_by("-failing_checks", "dataset__schema", "dataset__name")[:limit]
    )
