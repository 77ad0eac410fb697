"""Rectification (Art. 16): the officer's corrections, and carrying them out on the sources.

A correction is ``{"dataset": id, "column": name, "value": text or null}``: set `column` of the
subject's rows of `dataset` to `value`. Corrections are set after the preview, only on datasets the
preview matched (directly or via a relationship, at least one row), only on columns the catalog knows
as present, never on a retained dataset (a hold or a statutory record is kept as it is: its owner
decides). The values are personal data: stored only encrypted (``corrections_encrypted``,
governance.crypto), decrypted by the process that executes, never put in an audit event, an error, a
log line or the API (``correction_columns`` says which columns of which datasets). Setting them
withdraws an approval: what is approved is the request's digest, corrections included.

Execution (per source, children before parents, as erasure): every corrected dataset's count is
taken again in one read-only snapshot per source (nothing changes when one moved); then each dataset
in ONE source transaction: count again, ``UPDATE … SET column = value … RETURNING ctid`` on exactly
the matched rows (PostgreSQL casts each text value to the column's type; a value it cannot cast fails
that dataset, rolled back), then prove by those ctids that every updated row holds the new values and
that as many rows changed as were counted, else ROLLBACK. Datasets without corrections are skipped.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from governance import crypto
from governance.errors import ConflictError, InvalidInput
from governance.models import Column
from governance.services.common import refusal_recorded

from ..engine import target
from ..models import DatasetOutcome, RequestAction, RequestDataset, RequestKind, RequestState, SubjectRequest
from .plan import SourcePlan
from .requests import _ensure_officer, _lock, _params, finish

MAX_CORRECTIONS = 100
MAX_CORRECTION_VALUE = 1000
# Corrections may be set once the request was previewed, and until it runs.
CORRECTABLE = (RequestState.PREVIEWED, RequestState.APPROVED, RequestState.FAILED, RequestState.NEEDS_ATTENTION)


def corrections_of(request: SubjectRequest) -> list[dict[str, Any]]:
    """The corrections, decrypted (for validation and the engine only: never shown, stored or logged)."""
    if not request.corrections_encrypted:
        return []
    return list(json.loads(crypto.decrypt(request.corrections_encrypted)))


def _shape(corrections: Any) -> list[dict[str, Any]]:
    if not isinstance(corrections, list) or not corrections:
        raise InvalidInput("Give at least one correction: {dataset, column, value}.", field="corrections")
    if len(corrections) > MAX_CORRECTIONS:
        raise InvalidInput(f"At most {MAX_CORRECTIONS} corrections.", field="corrections")
    clean: list[dict[str, Any]] = []
    seen: set[tuple[int, str]] = set()
    for i, item in enumerate(corrections):
        where = f"corrections[{i}]"
        if not isinstance(item, dict) or set(item) != {"dataset", "column", "value"}:
            raise InvalidInput(f"{where}: give exactly dataset, column and value.", field="corrections")
        dataset, column, value = item["dataset"], item["column"], item["value"]
        if not isinstance(dataset, int) or isinstance(dataset, bool) or dataset < 1:
            raise InvalidInput(f"{where}.dataset: a dataset id.", field="corrections")
        if not isinstance(column, str) or not column or len(column) > 255:
            raise InvalidInput(f"{where}.column: a column name.", field="corrections")
        if value is not None and (not isinstance(value, str) or len(value) > MAX_CORRECTION_VALUE):
            raise InvalidInput(
                f"{where}.value: text of at most {MAX_CORRECTION_VALUE} characters, or null.", field="corrections"
            )
        if (dataset, column) in seen:
            raise InvalidInput(f"{where}: {column!r} of dataset {dataset} is corrected twice.", field="corrections")
        seen.add((dataset, column))
        clean.append({"dataset": dataset, "column": column, "value": value})
    return clean


def validate(request: SubjectRequest, corrections: list[dict[str, Any]]) -> None:
    """Every correction is on a dataset the preview matched and not retained, on a present column.
    The messages name datasets and columns, never a value."""
    rows = {r.dataset_id: r for r in request.datasets.select_related("dataset")}
    present: dict[int, set[str]] = defaultdict(set)
    for dataset_id, name in Column.objects.filter(
        dataset_id__in=list(rows), is_present=True, dataset__is_present=True
    ).values_list("dataset_id", "name"):
        present[dataset_id].add(name)
    for i, item in enumerate(corrections):
        where, row = f"corrections[{i}]", rows.get(item["dataset"])
        if row is None or not row.matched:
            raise InvalidInput(
                f"{where}: dataset {item['dataset']} holds none of the subject's rows in the preview.",
                field="corrections",
            )
        if row.action == RequestAction.RETAIN:
            raise InvalidInput(
                f"{where}: {row.dataset.qualified_name} is retained ({row.get_legal_basis_display().lower()}):"
                " a request does not change it; its owner decides.",
                field="corrections",
            )
        if item["column"] not in present[row.dataset_id]:
            raise InvalidInput(
                f"{where}: {row.dataset.qualified_name} has no column {item['column'][:100]!r}.", field="corrections"
            )


def subject_request_correct(*, actor: Any, request: SubjectRequest, corrections: Any) -> SubjectRequest:
    """A privacy officer sets a previewed rectification's corrections (replacing earlier ones).
    An approved request goes back to previewed: it is approved again, by another officer."""
    with refusal_recorded(action="subject_request.correct", actor=actor, target=request):
        _ensure_officer(actor)
        clean = _shape(corrections)
        with transaction.atomic():
            request = _lock(request)
            if request.kind != RequestKind.RECTIFICATION:
                raise ConflictError("Only a rectification request has corrections.")
            if request.state not in CORRECTABLE:
                raise ConflictError(
                    f"Corrections are set on a previewed request; this one is {request.get_state_display().lower()}."
                )
            validate(request, clean)
            withdrawn = request.state == RequestState.APPROVED
            request.corrections_encrypted = crypto.encrypt(json.dumps(clean, sort_keys=True))
            request.correction_columns = [{"dataset": c["dataset"], "column": c["column"]} for c in clean]
            request.corrections_set_by, request.corrections_set_at = actor, timezone.now()
            fields = ["corrections_encrypted", "correction_columns", "corrections_set_by", "corrections_set_at"]
            if withdrawn:
                request.state, request.approved_by, request.approved_at = RequestState.PREVIEWED, None, None
                request.approved_digest = ""
                fields += ["state", "approved_by", "approved_at", "approved_digest"]
            request.save(update_fields=fields)
            audit.record(
                action="subject_request.corrections_set",
                actor=actor,
                target=request,
                metadata={
                    "corrections": len(clean),
                    "datasets": len({c["dataset"] for c in clean}),
                    "columns": request.correction_columns,
                    "approval_withdrawn": withdrawn,
                },
            )
    return request


def rectify(
    request: SubjectRequest, actor: Any, plans: list[SourcePlan], previewed: dict[int, RequestDataset]
) -> SubjectRequest:
    from .execution import _record, _tolerated

    timeout = settings.SUBJECTS_STATEMENT_TIMEOUT_MS
    wanted: dict[int, list[tuple[str, str | None]]] = defaultdict(list)
    for item in corrections_of(request):
        wanted[item["dataset"]].append((item["column"], item["value"]))
    if not wanted or not set(wanted) <= set(previewed):
        return finish(request, actor, RequestState.NEEDS_ATTENTION, "The corrections do not fit the preview.")
    for row in previewed.values():
        if row.dataset_id not in wanted:
            _record(row, actor, DatasetOutcome.SKIPPED, reason="No correction for this dataset.")
    moved = []
    for plan in plans:
        steps = [d for d in plan.datasets if d.dataset.pk in wanted]
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
    for plan in plans:
        stop = ""
        for d in plan.datasets:  # children first: a child matched through its parent's identifier goes first
            row = previewed[d.dataset.pk]
            if d.dataset.pk not in wanted:
                continue
            if stop:
                row.error = f"Not run: {stop}"
                row.save(update_fields=["error"])
                continue
            values = tuple(wanted[d.dataset.pk])
            step = target.Step(d.table, target.RECTIFY, d.match.condition, row.matched or 0, values=values)
            try:
                done = target.apply(
                    _params(plan), step, timeout_ms=timeout, tolerance=settings.SUBJECTS_COUNT_TOLERANCE
                )
            except target.TargetError as exc:
                done = target.StepOutcome(error=str(exc))
            columns = [c for c, _ in values]
            if done.refused:
                _record(row, actor, DatasetOutcome.NEEDS_ATTENTION, error=done.refused, columns=columns)
            elif done.error:
                _record(row, actor, DatasetOutcome.FAILED, error=done.error, columns=columns)
            else:
                _record(
                    row,
                    actor,
                    DatasetOutcome.DONE,
                    columns=columns,
                    rows_affected=done.affected,
                    verified=done.verified,
                )
                continue
            stop = f"{d.dataset.qualified_name} did not complete."
    outcomes = set(RequestDataset.objects.filter(request=request).values_list("outcome", flat=True))
    if DatasetOutcome.FAILED in outcomes or DatasetOutcome.PENDING in outcomes:
        return finish(request, actor, RequestState.FAILED, "A dataset could not be corrected: see the datasets.")
    if DatasetOutcome.NEEDS_ATTENTION in outcomes:
        return finish(request, actor, RequestState.NEEDS_ATTENTION, "A dataset's count moved: see the datasets.")
    return finish(request, actor, RequestState.DONE)
