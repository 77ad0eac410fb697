"""Reconciliation: recording findings, runs, repairs and their failures (portal transactions, audited)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from audit import services as audit
from audit.models import Outcome
from notifications.models import Kind as Notice
from notifications.services.outbox import notify

from ...models import (
    DataSource,
    DriftFinding,
    DriftResolution,
)
from ...provisioners import postgres as pg

# The portal-side advisory lock a provisioning job holds on a target object while it converges it;
# taking the same one means a repair and a job on one object never overlap.
from .model import (
    Drift,
    FindingKey,
    PairKey,
    ReconcileResult,
    log,
)


def _record(
    source: DataSource, drift: list[Drift], skipped_pairs: set[PairKey], result: ReconcileResult, actor: Any, now: Any
) -> None:
    """Close what is gone, open what is new, audit the run: one transaction, source row locked."""
    with transaction.atomic():
        # Two runs of one source (beat + an operator) write one after the other, so neither opens a
        # finding the other just opened nor closes one the other just saw.
        DataSource.objects.select_for_update().filter(pk=source.pk).values_list("pk").first()
        open_rows = (
            DriftFinding.objects.open()
            .filter(source=source)
            .values_list("pk", "principal", "object_schema", "object_name", "column", "privilege", "kind")
        )
        observed = {item.key: item for item in drift}
        existing: set[FindingKey] = set()
        gone: list[int] = []
        for pk, *rest in open_rows:
            key: FindingKey = tuple(rest)  # type: ignore[assignment]
            existing.add(key)
            if key not in observed and key[:3] not in skipped_pairs:
                gone.append(pk)
        if gone:
            DriftFinding.objects.filter(pk__in=gone).update(resolved_at=now, resolution=DriftResolution.GONE)
        new = [
            DriftFinding(
                source=source,
                dataset_id=item.dataset_id,
                principal=item.principal,
                object_schema=item.object_schema,
                object_name=item.object_name,
                column=item.column,
                privilege=item.privilege,
                kind=item.kind,
                detail=item.detail,
                found_at=now,
                run_id=result.run_id,
            )
            for key, item in observed.items()
            if key not in existing
        ]
        created = DriftFinding.objects.bulk_create(new)
        for finding in created:
            audit.record(
                action="drift.found",
                actor=actor,
                target=finding,
                metadata={"source": source.name, "kind": finding.kind, "run": result.run_id},
            )
        if created:  # one message to the source's owner per run, not one per finding
            notify(
                Notice.DRIFT_FOUND,
                actor=actor,
                source=source.pk,
                run=str(result.run_id),
                findings=[f.pk for f in created],
            )
        result.opened, result.gone = len(new), len(gone)
        audit.record(
            action="reconcile.run",
            actor=actor,
            target=source,
            metadata={
                "run": result.run_id,
                "counts": result.counts,
                "opened": result.opened,
                "gone": result.gone,
                "skipped_in_flight": result.skipped,
                "principals": result.principals,
                "fix": result.fix,
                "posture": result.posture,
                "login": result.login,
            },
        )


# --------------------------------------------------------------------------------------------
# Repair
# --------------------------------------------------------------------------------------------


def _close_fixed(
    source: DataSource, pair: PairKey, items: list[Drift], applied: pg.ApplyResult, result: ReconcileResult, actor: Any
) -> None:
    """Close the open findings of a repaired (principal, object) as `fixed`, audited one by one."""
    name, schema, object_name = pair
    now = timezone.now()
    with transaction.atomic():
        findings = list(
            DriftFinding.objects.open()
            .select_for_update()
            .filter(source=source, principal=name, object_schema=schema, object_name=object_name)
        )
        for finding in findings:
            finding.resolved_at = now
            finding.resolved_by = actor if actor is not None and actor.pk else None
            finding.resolution = DriftResolution.FIXED
        DriftFinding.objects.bulk_update(findings, ["resolved_at", "resolved_by", "resolution"])
        for finding in findings:
            audit.record(
                action="drift.fixed",
                actor=actor,
                target=finding,
                changes={"resolution": ["", DriftResolution.FIXED]},
                metadata={
                    "source": source.name,
                    "run": result.run_id,
                    "sql": list(applied.statements),
                    "target_ms": round(applied.elapsed_ms, 2),
                },
            )
    fixed = {item.key for item in items}
    result.fixed_keys |= fixed
    result.fixed += len(fixed)


def _record_fix_failure(source: DataSource, item: Drift, error: str, result: ReconcileResult, actor: Any) -> None:
    line = f"{pg.display_name(item.principal)} on {item.where}: {error}"
    result.errors.append(line)
    log.warning("Drift repair failed on %s: %s", source.name, line)
    audit.record(
        action="drift.fix",
        actor=actor,
        target=source,
        outcome=Outcome.FAILED,
        reason=error,
        metadata={"run": result.run_id, "principal": item.principal, "object": item.where},
    )


# --------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------
