"""`datasource_sync`: make the catalog match what a data source really holds (PostgreSQL: its
relations and columns; AWS: the fields of its registered S3 prefixes), with PII discovery."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from accounts.roles import administers_sources
from audit import services as audit
from audit.models import Outcome

from .. import progress
from ..backends import KINDS, backend_for, has_backend
from ..catalog.sync import AppliedSync, SourceSnapshot, SyncFailed, SyncResult, apply_snapshot
from ..catalog.sync_s3 import S3Snapshot, apply_s3_snapshot
from ..errors import InvalidInput, NotPermitted
from ..models import DataSource
from . import publishing
from .common import refusal_recorded
from .lineage import lineage_lock, lineage_refresh
from .reconcile.views import has_treated_grants

__all__ = ["SyncFailed", "SyncResult", "datasource_sync", "datasources_sync_all", "ensure_may_sync"]

log = logging.getLogger(__name__)

# Sent after a sync that changed a source's catalog, once it is committed, with `source_id` and
# `result`: how the apps that build on governance follow the catalog without governance importing
# them (subjects: identifier suggestions, docs/subjects.md). Sent robustly: a receiver that fails
# is logged and the sync stands. Receivers publish work for a worker; they never read a target here.
catalog_synced = Signal()

# The stages a sync reports (governance.progress) around the sampling the readers report themselves.
READING = "reading the source"
APPLYING = "writing the catalog"


def ensure_may_sync(actor: Any, source: DataSource) -> None:
    """Refuse a sync the actor may not run or the source cannot have (checked again when it runs)."""
    # actor None is the system: the scheduled job or a management command without --actor.
    if actor is not None and not administers_sources(actor):
        raise NotPermitted("Only governance admins can sync data sources.")
    if not has_backend(source):
        raise InvalidInput(f"{source.name} is neither a PostgreSQL nor an AWS source; it cannot be synced.")


def _record_failure(source: DataSource, actor: Any, message: str) -> None:
    """Keep the error on the source (operational metadata, hence `.update()`: it is not an edit of
    the source's settings and must not move `updated_at`) and in the audit trail."""
    with transaction.atomic():
        DataSource.objects.filter(pk=source.pk).update(last_sync_error=message)
        audit.record(
            action="datasource.sync",
            actor=actor,
            target=source,
            outcome=Outcome.FAILED,
            reason=message,
            metadata={"code": SyncFailed.code},
        )
    source.last_sync_error = message


def datasource_sync(*, source: DataSource, actor: Any = None) -> SyncResult:
    """Read the source's schemas, tables, views and columns, and upsert them into the catalog.

    Order matters: the target is read first, with no portal transaction open (network I/O must
    never hold portal locks, house rule 4); then one `transaction.atomic()` locks the source row
    (two concurrent syncs of one source apply one after the other) and writes only the
    differences. A run that changes nothing writes no audit event and moves no `updated_at`; a run
    that changes something writes one `datasource.synced` event with the counts (and the PII
    suggestions withdrawn), plus one `dataset.vanished` / `dataset.reappeared` event per dataset
    that left or came back and one `column_tag.reopened` event per rejection the data reopened.

    An AWS source is synced through its registered S3 prefixes (`governance.catalog.sync_s3`):
    the same transaction, events and PII discovery, on a bounded sample of the newest objects.

    Raises NotPermitted (recorded as denied) for a non-admin actor, SyncFailed (recorded as failed,
    message kept in `source.last_sync_error`) when the source cannot be read.
    """
    with refusal_recorded(action="datasource.sync", actor=actor, target=source):
        ensure_may_sync(actor, source)
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError(
            "datasource_sync() reads a remote database; call it outside transaction.atomic() "
            "so that no portal lock is held while waiting on the network."
        )

    progress.report(0, 0, READING)
    try:
        snapshot = backend_for(source).read_catalog(source)
    except SyncFailed as exc:
        _record_failure(source, actor, exc.message)
        raise

    now = timezone.now()
    progress.report(0, 0, APPLYING)
    try:
        result = _apply(source, snapshot, actor, now)
    except SyncFailed as exc:  # e.g. no classification to give new datasets: nothing was written
        _record_failure(source, actor, exc.message)
        raise
    source.last_synced_at = now
    source.last_sync_error = ""
    _log_summary(source, result)
    if _columns_changed(result) and source.provisions and has_treated_grants(source):
        publishing.governed_views_follow(source.pk)  # the catalog is committed: a worker may read it
    if result.changed:
        for receiver, error in catalog_synced.send_robust(sender=DataSource, source_id=source.pk, result=result):
            if isinstance(error, Exception):
                log.error("after the catalog sync of %s, %r failed: %r", source.name, receiver, error)
    return result


def _columns_changed(result: SyncResult) -> bool:
    return bool(
        result.columns_created or result.columns_updated or result.columns_vanished or result.columns_reappeared
    )


def _log_summary(source: DataSource, result: SyncResult) -> None:
    """One line per source and sync, whatever its size: what changed, and how many relations could
    not be sampled (a warning then, naming the first five; the audit event keeps twenty)."""
    failures = result.sampling_failures
    if not failures:
        log.info("catalog sync of %s: %s", source.name, result.summary())
        return
    # Names may be hostile: %r keeps the line one line and unambiguous.
    log.warning("catalog sync of %s: %s; not sampled, first: %r", source.name, result.summary(), sorted(failures)[:5])


def _apply(source: DataSource, snapshot: SourceSnapshot, actor: Any, now: dt.datetime) -> SyncResult:
    with transaction.atomic():
        lineage_lock([source.pk])  # before any row lock (see lineage_lock)
        locked = DataSource.objects.select_for_update().get(pk=source.pk)
        applied: AppliedSync
        if isinstance(snapshot, S3Snapshot):
            applied = apply_s3_snapshot(source=locked, snapshot=snapshot, now=now)
        else:
            applied = apply_snapshot(source=locked, snapshot=snapshot, now=now)
        result = applied.result
        # What the views read may have changed: their effective classification and inherited tags
        # follow in this same transaction (each change audited with its reason).
        lineage_refresh(source_id=locked.pk, actor=actor, reason=f"catalog sync of {locked.name}")
        if result.changed:
            audit.record(
                action="datasource.synced",
                actor=actor,
                target=locked,
                reason=result.summary(),
                metadata=result.as_metadata(),
            )
            for dataset in applied.vanished:
                audit.record(
                    action="dataset.vanished",
                    actor=actor,
                    target=dataset,
                    changes={"is_present": [True, False]},
                    reason=f"{dataset.qualified_name} is no longer in {locked.name}.",
                    metadata={"source": locked.name, "schema": dataset.schema, "name": dataset.name},
                )
            for dataset in applied.reappeared:
                audit.record(
                    action="dataset.reappeared",
                    actor=actor,
                    target=dataset,
                    changes={"is_present": [False, True]},
                    reason=f"{dataset.qualified_name} is back in {locked.name}.",
                    metadata={"source": locked.name, "schema": dataset.schema, "name": dataset.name},
                )
            for tag, old in applied.reopened:
                audit.record(
                    action="column_tag.reopened",
                    actor=actor,
                    target=tag,
                    changes={"status": [old["status"], tag.status]},
                    reason=f"{tag.findings[0]['shape']} ({tag.tag} on {tag.column.name}).",
                    metadata={"column": tag.column.name, "tag": tag.tag, "previous_decision": old},
                )
        # Operational metadata, not an edit of the source: `.update()` leaves `updated_at` alone.
        DataSource.objects.filter(pk=source.pk).update(last_synced_at=now, last_sync_error="")
    return result


def datasources_sync_all() -> dict[str, SyncResult | str]:
    """Every PostgreSQL and AWS source, as the system (the scheduled run): what views read changes
    when someone runs CREATE OR REPLACE VIEW, and a view's effective classification must follow
    without waiting for an admin to press *Sync*; undecided PII suggestions are re-evaluated on
    fresh samples. One source failing (already recorded on it and in the trail) does not stop the
    others."""
    out: dict[str, SyncResult | str] = {}
    for source in DataSource.objects.filter(kind__in=KINDS).order_by("name"):
        try:
            out[source.name] = datasource_sync(source=source)
        except SyncFailed as exc:
            out[source.name] = exc.message
        except Exception as exc:  # a bug on one source must not hide the others' changes
            log.exception("Scheduled catalog sync of %s failed", source.name)
            out[source.name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    return out
