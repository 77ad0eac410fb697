"""Integrity watches: datasets whose rows must not change behind anyone's back (docs/quality.md#integrity).

The owner, stewards or a governance admin mark a dataset immutable or append-only; each quality run
then fingerprints it in the database (quality.engine.integrity) and `record_snapshot` compares the
fingerprint with the last snapshot: a change that should not have happened is a finding (open until
someone accepts it), an audit event `integrity.changed` and a notification to the owner, like drift.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from audit.models import Outcome
from governance.errors import InvalidInput
from governance.models import Dataset, DatasetKind, SourceKind
from governance.services.common import refusal_recorded
from notifications.models import Kind as Notice
from notifications.services.outbox import notify

from ..engine import integrity as engine
from ..engine.runner import IntegritySpec, RunOutcome
from ..models import DatasetQuality, IntegrityFinding, IntegrityMode, IntegritySnapshot, IntegrityWatch, QualityRun
from .checks import _ensure_may


def watch_fields(dataset: Dataset, mode: str, key_column: str = "") -> tuple[str, str]:
    """A watch's mode and key column as `integrity_watch_set` would store them, or InvalidInput
    naming the field (also what a plan compares with the stored watch: quality.as_code)."""
    if mode not in IntegrityMode.values:
        raise InvalidInput(f"{mode!r} is not immutable or append_only.", field="mode")
    key_column = (key_column or "").strip()
    s3 = dataset.kind == DatasetKind.S3_PREFIX
    if not s3 and dataset.source.kind != SourceKind.POSTGRESQL:
        raise InvalidInput("Integrity is watched on PostgreSQL tables and S3 prefixes.", field="dataset")
    if s3 and key_column:
        raise InvalidInput(
            "An S3 prefix has no key column: append-only means objects are only added.", field="key_column"
        )
    if mode == IntegrityMode.APPEND_ONLY and not s3:
        if not dataset.columns.filter(name=key_column, is_present=True).exists():
            raise InvalidInput("An append-only dataset needs its growing key column.", field="key_column")
    elif key_column:
        raise InvalidInput("Only an append-only dataset has a key column.", field="key_column")
    return str(mode), key_column


def integrity_watch_set(*, actor: Any, dataset: Dataset, mode: str, key_column: str = "") -> IntegrityWatch:
    with refusal_recorded(action="integrity_watch.set", actor=actor, target=dataset):
        with transaction.atomic():
            _ensure_may(actor, dataset)
            mode, key_column = watch_fields(dataset, mode, key_column)
            watch, created = IntegrityWatch.objects.select_for_update().get_or_create(
                dataset=dataset, defaults={"mode": mode, "key_column": key_column, "created_by": actor}
            )
            before = {} if created else {"mode": watch.mode, "key_column": watch.key_column}
            if not created and (watch.mode, watch.key_column) != (mode, key_column):
                watch.mode, watch.key_column = mode, key_column
                watch.save(update_fields=["mode", "key_column"])
                # A new rule starts from a new baseline: the next run's snapshot.
                IntegritySnapshot.objects.filter(dataset=dataset).delete()
            DatasetQuality.objects.get_or_create(dataset=dataset, defaults={"next_run_at": timezone.now()})
            audit.record(
                action="integrity_watch.set",
                actor=actor,
                target=dataset,
                changes=audit.diff(before, {"mode": mode, "key_column": key_column}),
            )
    return watch


def integrity_finding_resolve(*, actor: Any, finding: IntegrityFinding, resolution: str) -> IntegrityFinding:
    """Accept a change (it was a planned correction, say): the finding closes with the reason."""
    with refusal_recorded(action="integrity_finding.resolve", actor=actor, target=finding):
        with transaction.atomic():
            finding = IntegrityFinding.objects.select_for_update().select_related("dataset").get(pk=finding.pk)
            _ensure_may(actor, finding.dataset)
            if not resolution.strip():
                raise InvalidInput("Say why the change is accepted.", field="resolution")
            if finding.resolved_at is None:
                finding.resolved_at, finding.resolved_by, finding.resolution = timezone.now(), actor, resolution.strip()
                finding.save(update_fields=["resolved_at", "resolved_by", "resolution"])
                audit.record(
                    action="integrity_finding.resolved", actor=actor, target=finding, reason=resolution.strip()
                )
    return finding


def spec_for(dataset: Dataset) -> IntegritySpec | None:
    watch = IntegrityWatch.objects.filter(dataset=dataset).first()
    if watch is None:
        return None
    last = IntegritySnapshot.objects.filter(dataset=dataset).order_by("-taken_at", "-pk").first()
    return IntegritySpec(watch.mode, watch.key_column, last.watermark if last is not None else None)


def record_snapshot(dataset: Dataset, run: QualityRun, outcome: RunOutcome, now: dt.datetime, actor: Any) -> int:
    """In the run's transaction: the new snapshot, and a finding when it differs from the last one
    in a way the watch forbids. Returns the number of findings opened."""
    watch = IntegrityWatch.objects.filter(dataset=dataset).first()
    fp = outcome.fingerprint
    if watch is None or fp is None:
        return 0
    last = IntegritySnapshot.objects.filter(dataset=dataset).order_by("-taken_at", "-pk").first()
    before = None if last is None else engine.Fingerprint(last.rows, last.checksum, last.watermark)
    problems = engine.compare(watch.mode, before, fp)
    snapshot = IntegritySnapshot.objects.create(
        dataset=dataset, run=run, taken_at=now, rows=fp.rows, checksum=fp.checksum, watermark=fp.watermark
    )
    if not problems:
        return 0
    detail = (
        f"{dataset.qualified_name} is {watch.get_mode_display().split(' (')[0].lower()}, but since "
        + (f"{last.taken_at:%Y-%m-%d %H:%M} UTC " if last else "")
        + "; ".join(problems)
        + "."
    )
    finding = IntegrityFinding.objects.create(dataset=dataset, snapshot=snapshot, detail=detail, found_at=now)
    audit.record(
        action="integrity.changed",
        actor=actor,
        target=dataset,
        outcome=Outcome.FAILED,
        reason=detail,
        metadata={"finding": finding.pk, "run": run.pk, "mode": watch.mode, "rows": fp.rows},
    )
    notify(Notice.INTEGRITY_CHANGED, actor=actor, dataset=dataset.pk, finding=finding.pk, detail=detail)
    return 1


def run_s3(dataset: Dataset, *, actor: Any, trigger: str) -> QualityRun:
    """A run of an S3 prefix: the bucket's protections and the prefix's manifest, read with the
    source's keys (network first, no portal transaction open), then recorded in one transaction."""
    from django.conf import settings

    from governance.catalog.s3_sample import client
    from governance.provisioning import aws_target_for

    from ..engine import s3_integrity as s3i
    from ..models import QualityStatus

    started = timezone.now()
    error, prot, man = "", None, None
    try:
        s3 = client(aws_target_for(dataset.source))
        prot = s3i.protections(s3, dataset.schema)
        man = s3i.manifest(s3, dataset.schema, dataset.name, limit=settings.QUALITY_S3_MANIFEST_MAX_OBJECTS)
    except s3i.S3IntegrityError as exc:
        error = str(exc)
    except ImproperlyConfigured as exc:  # the source's keys cannot be read (a KMS outage, say)
        error = f"Could not read {dataset.source.name}'s AWS keys: {exc}"
    now = timezone.now()
    with transaction.atomic():
        state = DatasetQuality.objects.select_for_update().get(dataset=dataset)
        run = QualityRun.objects.create(
            dataset=dataset,
            trigger=trigger,
            actor=actor,
            started_at=started,
            finished_at=now,
            duration_ms=(now - started).total_seconds() * 1000,
            status=QualityStatus.ERROR if error else QualityStatus.PASSING,
            error=error,
        )
        opened = 0
        watch = IntegrityWatch.objects.filter(dataset=dataset).first()
        if man is not None and prot is not None:
            last = IntegritySnapshot.objects.filter(dataset=dataset).order_by("-taken_at", "-pk").first()
            snapshot = IntegritySnapshot.objects.create(
                dataset=dataset, run=run, taken_at=now, rows=len(man), checksum=s3i.digest(man)[:40],
                manifest=man, protections=prot.as_dict(),
            )  # fmt: skip
            IntegritySnapshot.objects.filter(dataset=dataset).exclude(pk=snapshot.pk).update(manifest=None)
            if watch is not None and last is not None and last.manifest is not None:
                change = s3i.diff(last.manifest, man)
                forbidden = (
                    change if watch.mode == IntegrityMode.IMMUTABLE else s3i.Diff([], change.deleted, change.changed)
                )
                if forbidden:
                    opened = _s3_finding(dataset, snapshot, run, watch, forbidden, last, now, actor)
        state.status = run.status if not opened else QualityStatus.FAILING
        state.last_run_at = now
        state.save(update_fields=["status", "last_run_at"])
        audit.record(
            action="quality.run",
            actor=actor,
            target=dataset,
            outcome=Outcome.FAILED if error else Outcome.SUCCESS,
            reason=error[:500],
            metadata={
                "run": run.pk, "trigger": trigger, "status": run.status, "objects": None if man is None else len(man),
                "protection_problems": [] if prot is None else prot.problems, "integrity_changed": bool(opened),
            },
        )  # fmt: skip
    return run


def _s3_finding(
    dataset: Dataset,
    snapshot: IntegritySnapshot,
    run: QualityRun,
    watch: IntegrityWatch,
    change: Any,
    last: IntegritySnapshot,
    now: dt.datetime,
    actor: Any,
) -> int:
    parts = []
    for what, keys in (("added", change.added), ("deleted", change.deleted), ("changed", change.changed)):
        if keys:
            shown = ", ".join(keys[:10]) + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")
            parts.append(f"{len(keys)} object{'s' if len(keys) != 1 else ''} {what} ({shown})")
    mode = watch.get_mode_display().split(" (")[0].lower()
    detail = (
        f"s3://{dataset.schema}/{dataset.name} is {mode}, but since {last.taken_at:%Y-%m-%d %H:%M} UTC "
        + "; ".join(parts)
        + "."
    )
    finding = IntegrityFinding.objects.create(dataset=dataset, snapshot=snapshot, detail=detail, found_at=now)
    audit.record(
        action="integrity.changed", actor=actor, target=dataset, outcome=Outcome.FAILED, reason=detail[:2000],
        metadata={"finding": finding.pk, "run": run.pk, "mode": watch.mode, "added": len(change.added),
                  "deleted": len(change.deleted), "changed": len(change.changed)},
    )  # fmt: skip
    notify(Notice.INTEGRITY_CHANGED, actor=actor, dataset=dataset.pk, finding=finding.pk, detail=detail[:2000])
    return 1
