"""Reads of the quality app, shaped for the pages, the API and the badges.

Check definitions, statuses and results are catalog metadata (every signed-in user sees them: people
decide whether to ask for data by its quality). A profile's values (min, max, most common values of
columns without PII) are data: only the dataset's owner and stewards, governance admins, security
officers, auditors and people holding active access to it see them; others see the counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
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


def catalog_datasets(source: str | None = None) -> QuerySet[Dataset]:
    """The catalog's datasets (of one source, when named) that a checks-as-code document may name."""
    datasets = Dataset.objects.select_related("source")
    return datasets.filter(source__name=source) if source else datasets


def datasets_with_checks(source: str | None = None) -> QuerySet[Dataset]:
    """What a whole export holds: the datasets with a quality check or an integrity watch."""
    watched = IntegrityWatch.objects.values("dataset_id")
    checked = QualityCheck.objects.values("dataset_id")
    return catalog_datasets(source).filter(Q(pk__in=checked) | Q(pk__in=watched))


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


def _states(dataset_ids: list[int]) -> QuerySet[DatasetQuality]:
    """The datasets' quality rows with their enabled checks and open integrity findings counted (one
    query). A dataset without a row has never had a check or a watch."""
    checks = (
        QualityCheck.objects.filter(dataset_id=OuterRef("dataset_id"), enabled=True)
        .order_by()
        .values("dataset_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    findings = (
        IntegrityFinding.objects.filter(dataset_id=OuterRef("dataset_id"), resolved_at__isnull=True)
        .order_by()
        .values("dataset_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return DatasetQuality.objects.filter(dataset_id__in=dataset_ids).annotate(
        n_checks=Coalesce(Subquery(checks), 0), n_findings=Coalesce(Subquery(findings), 0)
    )


def _summary(state: DatasetQuality | None) -> Summary:
    if state is None:
        return Summary(QualityStatus.UNKNOWN, 0, 0, None)
    changed = int(getattr(state, "n_findings", 0))
    status = QualityStatus.FAILING if changed else state.status
    return Summary(status, state.failing_checks, int(getattr(state, "n_checks", 0)), state.last_run_at, changed)


def summaries(dataset_ids: list[int]) -> dict[int, Summary]:
    """Badges for many datasets in one query (the catalog list, the inbox); a dataset changed where it
    must not (an open integrity finding) shows as failing until someone accepts the change."""
    states = {s.dataset_id: s for s in _states(dataset_ids)}
    return {pk: _summary(states.get(pk)) for pk in dataset_ids}


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
    """The dataset page's section: for a dataset that never had a check nor a watch, one query (and
    the steward check for the "define" link)."""
    state = _states([dataset.pk]).first()
    may_define = may_define_checks(user, dataset)
    if state is None:
        return DatasetQualityView(_summary(None), IntegrityView(None, None, []), [], [], [], False, may_define)
    runs = list(
        QualityRun.objects.filter(dataset=dataset)
        .annotate(failing=Count("results", filter=Q(results__status=CheckStatus.FAIL)), measured=Count("results"))
        .order_by("-started_at", "-pk")[:HISTORY]
    )
    profile = list(ColumnProfile.objects.filter(run=runs[0]).order_by("column")) if runs else []
    watch = IntegrityWatch.objects.filter(dataset=dataset).first()
    integrity = IntegrityView(watch, None, [])
    if watch is not None:
        integrity = IntegrityView(
            watch,
            IntegritySnapshot.objects.filter(dataset=dataset).order_by("-taken_at", "-pk").first(),
            list(IntegrityFinding.objects.filter(dataset=dataset, resolved_at__isnull=True).order_by("-found_at")),
        )
    return DatasetQualityView(
        summary=_summary(state),
        integrity=integrity,
        checks=list(checks_of(dataset)),
        trend=list(reversed(runs)),
        profile=profile,
        show_values=bool(profile) and may_see_profile_values(user, dataset),
        may_define=may_define,
    )


def failing_datasets(limit: int = 20) -> QuerySet[DatasetQuality]:
    return (
        DatasetQuality.objects.filter(status=QualityStatus.FAILING)
        .select_related("dataset__source", "dataset__owner")
        .order_by("-failing_checks", "dataset__schema", "dataset__name")[:limit]
    )
