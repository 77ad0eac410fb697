"""Checks: defined by a dataset's owner, its stewards or a governance admin; each change audited.

Owner-written SQL runs only once someone other than its author has reviewed it (`quality_check_review`);
changing its text withdraws the review.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import services as audit
from governance.errors import ConflictError, InvalidInput, NotPermitted
from governance.models import Dataset, SourceKind
from governance.services.common import refusal_recorded

from ..engine import checks as engine
from ..models import DatasetQuality, Kind, QualityCheck
from ..permissions import may_define_checks

FIELDS = ["name", "kind", "column", "params", "threshold", "enabled", "description"]
AUDITED = [*FIELDS, "reviewed_by"]


def _ensure_may(actor: Any, dataset: Dataset) -> None:
    if not may_define_checks(actor, dataset):
        raise NotPermitted(f"Only an owner or steward of {dataset.qualified_name} defines its quality checks.")


def _clean(dataset: Dataset, fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` checked and normalised, or InvalidInput naming the field."""
    if dataset.source.kind != SourceKind.POSTGRESQL or not dataset.is_present:
        raise InvalidInput(
            "Quality checks run on PostgreSQL tables and views present on their source.", field="dataset"
        )
    name = str(fields.get("name") or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("A check needs a name of at most 100 characters.", field="name")
    kind, column = str(fields.get("kind") or ""), str(fields.get("column") or "")
    params = fields.get("params") or {}
    if not isinstance(params, dict):
        raise InvalidInput("params: an object.", field="params")
    columns = list(dataset.columns.filter(is_present=True).values_list("name", flat=True))
    try:
        clean_params = engine.validate(kind, column, params, columns)
        threshold = engine.check_threshold(kind, fields.get("threshold", 0.0))
    except engine.CheckDefinitionError as exc:
        raise InvalidInput(str(exc), field=exc.field) from None
    if kind == Kind.REFERENTIAL:
        ref = Dataset.objects.filter(
            source=dataset.source, schema=clean_params["schema"], name=clean_params["table"], is_present=True
        ).first()
        if ref is None or not ref.columns.filter(name=clean_params["column"], is_present=True).exists():
            raise InvalidInput(
                "params: the referenced column is not in the catalog of this source.", field="params.column"
            )
    enabled = fields.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidInput("enabled: true or false.", field="enabled")
    return {
        "name": name,
        "kind": kind,
        "column": column,
        "params": clean_params,
        "threshold": threshold,
        "enabled": enabled,
        "description": str(fields.get("description") or "")[:2000],
    }


def check_fields(dataset: Dataset, fields: dict[str, Any]) -> dict[str, Any]:
    """A check's fields as `quality_check_create` would store them, or InvalidInput naming the field
    (unknown fields too): what a plan compares with the stored check (quality.as_code)."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise InvalidInput(f"Unknown field(s): {', '.join(sorted(unknown))}.", field=sorted(unknown)[0])
    return _clean(dataset, fields)


def _schedule(dataset: Dataset) -> None:
    """The dataset's quality row, due now when it has none yet (its first run comes at once)."""
    DatasetQuality.objects.get_or_create(dataset=dataset, defaults={"next_run_at": timezone.now()})


def quality_check_create(*, actor: Any, dataset: Dataset, **fields: Any) -> QualityCheck:
    with refusal_recorded(
        action="quality_check.create", actor=actor, target=dataset, metadata={"name": fields.get("name")}
    ):
        with transaction.atomic():
            _ensure_may(actor, dataset)
            unknown = set(fields) - set(FIELDS)
            if unknown:
                raise InvalidInput(f"Unknown field(s): {', '.join(sorted(unknown))}.", field=sorted(unknown)[0])
            values = _clean(dataset, fields)
            check = QualityCheck(dataset=dataset, created_by=actor, **values)
            try:
                with transaction.atomic():
                    check.save()
            except IntegrityError:
                raise ConflictError(f"{dataset.qualified_name} already has a check named {values['name']!r}.") from None
            _schedule(dataset)
            audit.record(
                action="quality_check.created",
                actor=actor,
                target=check,
                changes=audit.diff({}, audit.snapshot(check, AUDITED)),
                metadata={"dataset": dataset.pk},
            )
    return check


def quality_check_update(*, actor: Any, check: QualityCheck, **fields: Any) -> QualityCheck:
    with refusal_recorded(action="quality_check.update", actor=actor, target=check):
        with transaction.atomic():
            check = QualityCheck.objects.select_for_update().select_related("dataset__source").get(pk=check.pk)
            _ensure_may(actor, check.dataset)
            unknown = set(fields) - set(FIELDS)
            if unknown:
                raise InvalidInput(f"Unknown field(s): {', '.join(sorted(unknown))}.", field=sorted(unknown)[0])
            merged = {name: getattr(check, name) for name in FIELDS} | fields
            values = _clean(check.dataset, merged)
            before = audit.snapshot(check, AUDITED)
            if check.kind == Kind.CUSTOM_SQL and values["params"] != check.params:
                check.reviewed_by, check.reviewed_at = None, None  # new text: reviewed again before it runs
            for name, value in values.items():
                setattr(check, name, value)
            changes = audit.diff(before, audit.snapshot(check, AUDITED))
            if changes:
                try:
                    with transaction.atomic():
                        check.save()
                except IntegrityError:
                    raise ConflictError(f"Another check of this dataset is named {values['name']!r}.") from None
                audit.record(action="quality_check.updated", actor=actor, target=check, changes=changes)
    return check


def quality_check_review(*, actor: Any, check: QualityCheck) -> QualityCheck:
    """Approve an owner-written query to run (by someone other than its author)."""
    with refusal_recorded(action="quality_check.review", actor=actor, target=check):
        with transaction.atomic():
            check = QualityCheck.objects.select_for_update().select_related("dataset").get(pk=check.pk)
            _ensure_may(actor, check.dataset)
            if check.kind != Kind.CUSTOM_SQL:
                raise InvalidInput("Only owner-written SQL is reviewed.", field="kind")
            if check.created_by_id == getattr(actor, "pk", None):
                raise NotPermitted("Someone other than its author reviews an owner-written query.")
            check.reviewed_by, check.reviewed_at = actor, timezone.now()
            check.save(update_fields=["reviewed_by", "reviewed_at", "updated_at"])
            audit.record(
                action="quality_check.reviewed",
                actor=actor,
                target=check,
                metadata={"sql": check.params.get("sql", "")},
            )
    return check


def quality_check_delete(*, actor: Any, check: QualityCheck) -> None:
    with refusal_recorded(action="quality_check.delete", actor=actor, target=check):
        with transaction.atomic():
            check = QualityCheck.objects.select_for_update().select_related("dataset").get(pk=check.pk)
            _ensure_may(actor, check.dataset)
            snapshot = audit.snapshot(check, AUDITED)
            audit.record(
                action="quality_check.deleted",
                actor=actor,
                target=check,
                changes=audit.diff(snapshot, {}),
                metadata={"dataset": check.dataset_id},
            )
            check.delete()
