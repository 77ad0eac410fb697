"""Runs: measure a dataset's checks (and profile its columns) on its source, keep the results.

A run holds a lease on the dataset's quality row (one run per dataset at a time; a dead worker's
lease passes after QUALITY_RUN_LEASE_SECONDS), reads the source in one read-only transaction with a
time limit (quality.engine.runner), and records the run, its results, the profile, the checks' last
results, the dataset's status and the audit event in ONE transaction. When checks start failing the
dataset's owner is told (notification `quality_failing`, once per run that turns them red).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from audit import services as audit
from audit.models import Outcome
from governance.catalog.introspect import connection_params
from governance.errors import ConflictError, InvalidInput
from governance.models import Dataset, DatasetKind, SourceKind, TagStatus
from governance.secrets import SecretUnavailable
from governance.services.common import refusal_recorded
from notifications.models import Kind as Notice
from notifications.services.outbox import notify

from ..engine import checks as engine
from ..engine.profile import ProfileColumn
from ..engine.runner import Limits, RunOutcome, run
from ..models import (
    CheckStatus,
    ColumnProfile,
    DatasetQuality,
    IntegrityWatch,
    Kind,
    QualityCheck,
    QualityResult,
    QualityRun,
    QualityStatus,
    Trigger,
)
from .checks import _ensure_may
from .integrity import record_snapshot, run_s3, spec_for

log = logging.getLogger(__name__)


def limits() -> Limits:
    return Limits(
        time_limit_ms=int(settings.QUALITY_RUN_TIME_LIMIT_SECONDS * 1000),
        sample_above_rows=int(settings.QUALITY_SAMPLE_ABOVE_ROWS),
        sample_percent=float(settings.QUALITY_SAMPLE_PERCENT),
    )


def _interval(state: DatasetQuality) -> dt.timedelta | None:
    minutes = (
        state.interval_minutes if state.interval_minutes is not None else settings.QUALITY_DEFAULT_INTERVAL_MINUTES
    )
    return dt.timedelta(minutes=minutes) if minutes else None


def _take_lease(dataset: Dataset) -> None:
    now = timezone.now()
    with transaction.atomic():
        state, _ = DatasetQuality.objects.select_for_update().get_or_create(dataset=dataset)
        lease = dt.timedelta(seconds=settings.QUALITY_RUN_LEASE_SECONDS)
        if state.running_since is not None and state.running_since > now - lease:
            raise ConflictError(f"The checks of {dataset.qualified_name} are running already.")
        state.running_since = now
        state.save(update_fields=["running_since"])


def _release(dataset: Dataset) -> None:
    DatasetQuality.objects.filter(dataset=dataset).update(running_since=None)


def _withheld(dataset: Dataset) -> set[str]:
    """Columns whose values no profile may hold: any PII tag not rejected, or one inherited."""
    tagged = set(
        dataset.columns.filter(tags__isnull=False)
        .exclude(tags__status=TagStatus.REJECTED)
        .values_list("name", flat=True)
    )
    inherited = {c.name for c in dataset.columns.all() if c.inherited_tags}
    return tagged | inherited


def profile_plan(dataset: Dataset) -> list[ProfileColumn]:
    withheld = _withheld(dataset)
    return [
        ProfileColumn(c.name, c.data_type, withhold_values=c.name in withheld)
        for c in dataset.columns.filter(is_present=True).order_by("ordinal")
    ]


def quality_run(*, dataset: Dataset, actor: Any = None, trigger: str = Trigger.MANUAL) -> QualityRun:
    """Run `dataset`'s enabled (and, for owner-written SQL, reviewed) checks now, and profile it."""
    dataset = Dataset.objects.select_related("source", "owner").get(pk=dataset.pk)
    if actor is not None:
        _ensure_may(actor, dataset)
    s3 = dataset.kind == DatasetKind.S3_PREFIX
    if dataset.source.kind != SourceKind.POSTGRESQL and not s3:
        raise InvalidInput("Quality runs are for PostgreSQL datasets and S3 prefixes.", field="dataset")
    _take_lease(dataset)
    if s3:
        try:
            return run_s3(dataset, actor=actor, trigger=trigger)
        finally:
            _release(dataset)
    try:
        checks = [c for c in dataset.quality_checks.filter(enabled=True) if not c.awaiting_review]
        specs = [engine.CheckSpec(c.pk, c.kind, c.column, c.params) for c in checks]
        started = timezone.now()
        try:
            params = connection_params(dataset.source)
        except SecretUnavailable as exc:
            outcome = RunOutcome(error=str(exc))
        else:
            outcome = run(
                params,
                schema=dataset.schema,
                table=dataset.name,
                checks=specs,
                profile=profile_plan(dataset),
                watch=spec_for(dataset),
                limits=limits(),
            )
        return _record(dataset, checks, outcome, started=started, actor=actor, trigger=trigger)
    finally:
        _release(dataset)


def _judge(check: QualityCheck, value: float | None, error: str) -> tuple[str, str]:
    if error or value is None:
        return CheckStatus.ERROR, error or "No answer."
    if not engine.passes(check.kind, value, check.threshold):
        return CheckStatus.FAIL, ""
    change = check.params.get("max_change_fraction")
    if check.kind == Kind.ROW_COUNT and change is not None and check.last_value is not None:
        moved = abs(value - check.last_value) / max(check.last_value, 1.0)
        if moved > change:
            return CheckStatus.FAIL, f"The row count changed by {moved:.0%} since the last run (at most {change:.0%})."
    return CheckStatus.PASS, ""


def _record(
    dataset: Dataset,
    checks: list[QualityCheck],
    outcome: RunOutcome,
    *,
    started: dt.datetime,
    actor: Any,
    trigger: str,
) -> QualityRun:
    now = timezone.now()
    by_key = {m.key: m for m in outcome.measurements}
    with transaction.atomic():
        state = DatasetQuality.objects.select_for_update().get(dataset=dataset)
        was_failing = set(
            QualityCheck.objects.filter(dataset=dataset, last_status=CheckStatus.FAIL).values_list("pk", flat=True)
        )
        results: list[QualityResult] = []
        for check in checks:
            m = by_key.get(check.pk)
            error = outcome.error if m is None else m.error
            status, message = _judge(check, None if m is None else m.value, error)
            results.append(
                QualityResult(
                    check_ref=check,
                    status=status,
                    value=None if m is None else m.value,
                    threshold=check.threshold,
                    failing=None if m is None else m.failing,
                    examined=None if m is None else m.examined,
                    message=message[:400],
                )
            )
        statuses = [r.status for r in results]
        if CheckStatus.FAIL in statuses:
            status = QualityStatus.FAILING
        elif CheckStatus.ERROR in statuses or outcome.error:
            status = QualityStatus.ERROR
        else:
            status = QualityStatus.PASSING if results else QualityStatus.UNKNOWN
        quality_run = QualityRun.objects.create(
            dataset=dataset,
            trigger=trigger,
            actor=actor,
            started_at=started,
            finished_at=now,
            duration_ms=outcome.duration_ms,
            status=status,
            estimated_rows=outcome.estimated_rows,
            sample_percent=outcome.sample_percent,
            error=outcome.error[:2000],
        )
        for result in results:
            result.run = quality_run
        QualityResult.objects.bulk_create(results)
        for check, result in zip(checks, results, strict=True):
            check.last_status, check.last_value, check.last_run_at = result.status, result.value, now
        QualityCheck.objects.bulk_update(checks, ["last_status", "last_value", "last_run_at"])
        ColumnProfile.objects.bulk_create(
            ColumnProfile(
                run=quality_run,
                column=p.name,
                rows=p.rows,
                nulls=p.nulls,
                distinct=p.distinct,
                minimum=p.minimum,
                maximum=p.maximum,
                top_values=[[value, count] for value, count in p.top_values],
                values_withheld=p.values_withheld,
            )
            for p in outcome.profiles
        )
        failing = [r for r in results if r.status == CheckStatus.FAIL]
        state.status, state.failing_checks, state.last_run_at = status, len(failing), now
        interval = _interval(state)
        state.next_run_at = now + interval if interval else None
        state.save(update_fields=["status", "failing_checks", "last_run_at", "next_run_at"])
        changed = record_snapshot(dataset, quality_run, outcome, now, actor)
        newly = sorted(r.check_ref.name for r in failing if r.check_ref.pk not in was_failing)
        audit.record(
            action="quality.run",
            actor=actor,
            target=dataset,
            outcome=Outcome.FAILED if status == QualityStatus.ERROR else Outcome.SUCCESS,
            reason=outcome.error[:500],
            metadata={
                "run": quality_run.pk,
                "trigger": trigger,
                "status": status,
                "checks": len(results),
                "failing": [r.check_ref.name for r in failing],
                "errors": [r.check_ref.name for r in results if r.status == CheckStatus.ERROR],
                "sample_percent": outcome.sample_percent,
                "duration_ms": round(outcome.duration_ms, 1),
                "integrity_changed": bool(changed),
                "integrity_error": outcome.integrity_error,
            },
        )
        if newly:
            notify(Notice.QUALITY_FAILING, actor=actor, dataset=dataset.pk, run=quality_run.pk, checks=newly)
    return quality_run


def quality_run_request(*, actor: Any, dataset: Dataset) -> None:
    """Ask for a run now (the portal's button, the API): checked and audited here, measured by a
    worker (a run may take up to QUALITY_RUN_TIME_LIMIT_SECONDS; no web request waits for it)."""
    with refusal_recorded(action="quality.run_request", actor=actor, target=dataset):
        with transaction.atomic():
            _ensure_may(actor, dataset)
            if dataset.source.kind != SourceKind.POSTGRESQL and dataset.kind != DatasetKind.S3_PREFIX:
                raise InvalidInput("Quality runs are for PostgreSQL datasets and S3 prefixes.", field="dataset")
            state, _ = DatasetQuality.objects.select_for_update().get_or_create(dataset=dataset)
            lease = dt.timedelta(seconds=settings.QUALITY_RUN_LEASE_SECONDS)
            if state.running_since is not None and state.running_since > timezone.now() - lease:
                raise ConflictError(f"The checks of {dataset.qualified_name} are running already.")
            audit.record(action="quality.run_requested", actor=actor, target=dataset)
            transaction.on_commit(
                lambda: current_app.send_task("quality.tasks.run_quality_checks", args=[dataset.pk, actor.pk])
            )


def quality_runs_due(*, limit: int = 100) -> list[int]:
    """The datasets whose scheduled run is due, moved past this beat (the run sets the next one):
    one UPDATE, so two beats never hand out the same dataset twice."""
    now = timezone.now()
    lease = dt.timedelta(seconds=settings.QUALITY_RUN_LEASE_SECONDS)
    with transaction.atomic():
        due = list(
            DatasetQuality.objects.select_for_update(skip_locked=True)
            .filter(next_run_at__lte=now)
            .filter(
                Exists(QualityCheck.objects.filter(dataset_id=OuterRef("dataset_id"), enabled=True))
                | Exists(IntegrityWatch.objects.filter(dataset_id=OuterRef("dataset_id")))
            )
            .exclude(running_since__gt=now - lease)
            .values_list("dataset_id", flat=True)[:limit]
        )
        DatasetQuality.objects.filter(dataset_id__in=due).update(next_run_at=now + lease)
    return due
