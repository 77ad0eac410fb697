"""Executing an approved request: erasure (per dataset: erase, anonymise or retain) and access (an
encrypted ZIP of exactly the subject's rows), and the export's one download.

Erasure runs, per source, children before parents (a row pointing at the subject's customer goes
before the customer), each dataset in its own source transaction that counts again, refuses when the
count moved from the preview's by more than SUBJECTS_COUNT_TOLERANCE, changes exactly the matched
rows and proves it before COMMIT (subjects.engine.target.apply). Before any change, every dataset's
count is checked in one read-only snapshot per source: a request whose counts moved changes nothing.
A dataset that fails stops the rest of its source (a parent is never removed before its children).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import re
import zipfile
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from governance import crypto
from governance.errors import ConflictError, NotFound, NotPermitted
from governance.services.common import refusal_recorded

from ..engine import target
from ..models import (
    DatasetOutcome,
    HandlingAction,
    RequestDataset,
    RequestKind,
    RequestState,
    SubjectExport,
    SubjectRequest,
)
from .plan import SourcePlan, anonymised_columns
from .portal_account import portal_accounts_step
from .requests import _ensure_officer, _params, finish, handled

SUCCEEDED = (DatasetOutcome.DONE, DatasetOutcome.SKIPPED, DatasetOutcome.NOTIFIED)


def _record(
    row: RequestDataset,
    actor: Any,
    outcome: str,
    *,
    error: str = "",
    reason: str | None = None,
    columns: list[str] | None = None,
    **values: Any,
) -> None:
    """One dataset's outcome and its audit event (dataset, action, column names, counts: never a
    value). `reason`: why a dataset is skipped (default: its retention reason)."""
    with transaction.atomic():
        row.outcome, row.error, row.executed_at = outcome, error[:2000], timezone.now()
        for key, value in values.items():
            setattr(row, key, value)
        row.save()
        skipped = row.reason if reason is None else reason
        metadata = {
            "dataset": row.dataset_id,
            "dataset_name": str(row.dataset),
            "action": row.action,
            "legal_basis": row.legal_basis,
            "matched_at_preview": row.matched,
            "rows_affected": row.rows_affected,
            "verified": row.verified,
        }
        if columns is not None:
            metadata["columns"] = columns
        audit.record(
            action=f"subject_request.dataset_{outcome}",
            actor=actor,
            target=row.request,
            outcome="success" if outcome in SUCCEEDED else "failed",
            reason=(skipped if outcome == DatasetOutcome.SKIPPED else error)[:500],
            metadata=metadata,
        )


def _tolerated(expected: int | None, now: int) -> bool:
    return expected is not None and abs(now - expected) <= settings.SUBJECTS_COUNT_TOLERANCE


def erase(
    request: SubjectRequest, actor: Any, plans: list[SourcePlan], previewed: dict[int, RequestDataset]
) -> SubjectRequest:
    timeout = settings.SUBJECTS_STATEMENT_TIMEOUT_MS
    for row in previewed.values():
        if row.action == HandlingAction.RETAIN:
            _record(row, actor, DatasetOutcome.SKIPPED)
    # Before any change: every handled dataset's count, one snapshot per source.
    moved = []
    for plan in plans:
        steps = [d for d in plan.datasets if handled(previewed[d.dataset.pk].action)]
        if not steps:
            continue
        try:
            counts = target.count(_params(plan), [(d.table, d.match.condition) for d in steps], timeout_ms=timeout)
        except target.TargetError as exc:
            for d in steps:
                _record(previewed[d.dataset.pk], actor, DatasetOutcome.FAILED, error=str(exc))
            return finish(request, actor, RequestState.FAILED, f"{plan.source.name}: {exc}")
        for d, n in zip(steps, counts, strict=True):
            row = previewed[d.dataset.pk]
            if not _tolerated(row.matched, n):
                moved.append(row)
                _record(
                    row,
                    actor,
                    DatasetOutcome.NEEDS_ATTENTION,
                    error=f"{n} matching rows now, {row.matched} at the preview: nothing changed.",
                )
    if moved:
        return finish(request, actor, RequestState.NEEDS_ATTENTION, "Counts moved since the preview: preview again.")
    pii = anonymised_columns([d.dataset for p in plans for d in p.datasets])
    stopped = False
    for plan in plans:
        stop = ""
        for d in plan.datasets:  # children first (plan order)
            row = previewed[d.dataset.pk]
            if not handled(row.action):
                continue
            if stop:
                row.error = f"Not run: {stop}"
                row.save(update_fields=["error"])
                continue
            columns = pii.get(d.dataset.pk, ()) if row.action == HandlingAction.ANONYMISE else ()
            if row.action == HandlingAction.ANONYMISE and not columns:
                _record(row, actor, DatasetOutcome.FAILED, error="No nullable PII column to anonymise.")
                stop = f"{d.dataset.qualified_name} failed."
                continue
            step = target.Step(d.table, row.action, d.match.condition, row.matched or 0, columns)
            try:
                done = target.apply(
                    _params(plan), step, timeout_ms=timeout, tolerance=settings.SUBJECTS_COUNT_TOLERANCE
                )
            except target.TargetError as exc:
                done = target.StepOutcome(error=str(exc))
            if done.refused:
                _record(row, actor, DatasetOutcome.NEEDS_ATTENTION, error=done.refused)
            elif done.error:
                _record(row, actor, DatasetOutcome.FAILED, error=done.error)
            else:
                _record(row, actor, DatasetOutcome.DONE, rows_affected=done.affected, verified=done.verified)
                continue
            stop = f"{d.dataset.qualified_name} did not complete."
        stopped = stopped or bool(stop)
    if not stopped and (portal := portal_accounts_step(request, actor)):
        return finish(request, actor, RequestState.NEEDS_ATTENTION, portal)
    outcomes = set(RequestDataset.objects.filter(request=request).values_list("outcome", flat=True))
    if DatasetOutcome.FAILED in outcomes or DatasetOutcome.PENDING in outcomes:
        return finish(request, actor, RequestState.FAILED, "A dataset could not be changed: see the datasets.")
    if DatasetOutcome.NEEDS_ATTENTION in outcomes or stopped:
        return finish(request, actor, RequestState.NEEDS_ATTENTION, "A dataset's count moved: see the datasets.")
    return finish(request, actor, RequestState.DONE)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:80] or "dataset"


def _zip(parts: list[tuple[RequestDataset, target.Rows]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        manifest = []
        for row, found in parts:
            d = row.dataset
            base = f"{d.pk}-{_safe(d.source.name)}-{_safe(d.schema)}.{_safe(d.name)}"
            records = [dict(zip(found.columns, r, strict=True)) for r in found.rows]
            archive.writestr(f"{base}.json", json.dumps(records, default=str, indent=1, ensure_ascii=False))
            text = io.StringIO()
            writer = csv.writer(text)
            writer.writerow(found.columns)
            writer.writerows(["" if v is None else str(v) for v in r] for r in found.rows)
            archive.writestr(f"{base}.csv", text.getvalue())
            manifest.append(
                {
                    "source": row.dataset.source.name,
                    "schema": row.dataset.schema,
                    "table": row.dataset.name,
                    "rows": len(found.rows),
                    "files": [f"{base}.json", f"{base}.csv"],
                    "how": row.paths,
                }
            )
        archive.writestr("manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False))
    return buffer.getvalue()


def export(
    request: SubjectRequest, actor: Any, plans: list[SourcePlan], previewed: dict[int, RequestDataset]
) -> SubjectRequest:
    timeout = settings.SUBJECTS_STATEMENT_TIMEOUT_MS
    parts: list[tuple[RequestDataset, target.Rows]] = []
    for plan in plans:
        try:
            found = target.rows(
                _params(plan), [(d.table, d.match.condition) for d in plan.datasets], timeout_ms=timeout
            )
        except target.TargetError as exc:
            for d in plan.datasets:
                _record(previewed[d.dataset.pk], actor, DatasetOutcome.FAILED, error=str(exc))
            return finish(request, actor, RequestState.FAILED, f"{plan.source.name}: {exc}")
        parts += [(previewed[d.dataset.pk], f) for d, f in zip(plan.datasets, found, strict=True)]
    payload = _zip(parts)
    now = timezone.now()
    with transaction.atomic():
        SubjectExport.objects.filter(request=request).delete()
        SubjectExport.objects.create(
            request=request,
            payload_encrypted=crypto.encrypt(base64.b64encode(payload).decode()),
            size=len(payload),
            created_at=now,
            expires_at=now + dt.timedelta(days=settings.SUBJECTS_EXPORT_DAYS),
        )
        for row, part in parts:
            _record(row, actor, DatasetOutcome.DONE, rows_affected=len(part.rows))
    return finish(request, actor, RequestState.DONE, rows=sum(len(f.rows) for _, f in parts), size=len(payload))


def export_holder_id(request: SubjectRequest) -> int | None:
    """Who downloads an access export: the officer who created the request; for a self-service
    request (filed by the subject) the officer who executed it, who then answers the subject."""
    return request.executed_by_id if request.self_service else request.created_by_id


def subject_export_download(*, actor: Any, request: SubjectRequest) -> bytes:
    """The access request's ZIP, once, by the officer who created the request; deleted as it is read."""
    with refusal_recorded(action="subject_request.export_download", actor=actor, target=request):
        _ensure_officer(actor)
        with transaction.atomic():
            request = SubjectRequest.objects.select_for_update().get(pk=request.pk)
            if export_holder_id(request) != actor.pk:
                raise NotPermitted(
                    "Only the officer who executed this self-service request downloads its export."
                    if request.self_service
                    else "Only the officer who created the request downloads its export."
                )
            if request.kind != RequestKind.ACCESS:
                raise ConflictError("Only an access request has an export.")
            if request.export_downloaded_at is not None:
                raise ConflictError("The export was downloaded already: it is deleted.")
            held = SubjectExport.objects.filter(request=request).first()
            if held is None:
                raise NotFound("The request has no export (not executed yet, or expired).")
            if held.expires_at <= timezone.now():
                held.delete()
                audit.record(action="subject_request.export_expired", actor=actor, target=request)
                raise NotFound("The export expired and was deleted.")
            payload = base64.b64decode(crypto.decrypt(held.payload_encrypted))
            held.delete()
            request.export_downloaded_at = timezone.now()
            request.save(update_fields=["export_downloaded_at"])
            audit.record(
                action="subject_request.export_downloaded", actor=actor, target=request, metadata={"size": len(payload)}
            )
    return payload


def subject_exports_purge() -> int:
    """Delete the exports past their SUBJECTS_EXPORT_DAYS (beat task), each with its event."""
    with transaction.atomic():
        expired = list(SubjectExport.objects.select_for_update().filter(expires_at__lte=timezone.now()))
        for held in expired:
            held.delete()
            audit.record(action="subject_request.export_expired", actor=None, target=held.request)
    return len(expired)
