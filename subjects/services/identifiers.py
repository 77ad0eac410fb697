"""Subject identifiers, relationships between datasets, and each dataset's handling.

- `relationships_discover(source)`: the source's foreign keys (read from ``pg_constraint``, outside any
  portal transaction) stored as relationships between catalogued datasets; keys gone are removed.
- `identifiers_suggest(source)`: discovery, then suggestions: columns with a confirmed email, phone
  or national-id PII tag, and the referenced columns of foreign keys into tables named customers,
  clients, users, people or persons. A decided identifier is never changed by a suggestion.
- `subject_identifier_decide`: a steward confirms or rejects (the PII-tag rule).
- `relationship_declare` / `dataset_handling_set`: the dataset's owner or steward.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from governance.catalog.introspect import connection_params
from governance.errors import ConflictError, InvalidInput, NotPermitted
from governance.models import Column, ColumnTag, Dataset, DataSource, SourceKind, TagStatus
from governance.secrets import SecretUnavailable
from governance.services.common import refusal_recorded

from ..engine import target
from ..models import (
    DatasetHandling,
    HandlingAction,
    IdentifierKind,
    LegalBasis,
    Relationship,
    RelationshipOrigin,
    SubjectIdentifier,
)
from ..permissions import may_decide_identifiers, may_set_handling, may_suggest

TAG_KINDS = {"email": IdentifierKind.EMAIL, "phone": IdentifierKind.PHONE, "national_id": IdentifierKind.NATIONAL_ID}
SUBJECT_TABLES = {
    "customers": IdentifierKind.CUSTOMER_ID,
    "clients": IdentifierKind.CUSTOMER_ID,
    "users": IdentifierKind.USER_ID,
    "people": IdentifierKind.USER_ID,
    "persons": IdentifierKind.USER_ID,
}
DECISIONS = {"confirm": TagStatus.CONFIRMED, "reject": TagStatus.REJECTED}


def relationships_discover(*, source: DataSource, actor: Any = None) -> int:
    """Store the source's foreign keys between catalogued datasets; returns how many there are."""
    if source.kind != SourceKind.POSTGRESQL:
        raise InvalidInput("Foreign keys are read from PostgreSQL sources only.", field="source")
    try:
        keys = target.foreign_keys(connection_params(source), timeout_ms=settings.SUBJECTS_STATEMENT_TIMEOUT_MS)
    except (target.TargetError, SecretUnavailable) as exc:
        raise ConflictError(f"Could not read the foreign keys of {source.name}: {exc}") from None
    datasets = {(d.schema, d.name): d for d in Dataset.objects.filter(source=source, is_present=True)}
    now = timezone.now()
    with transaction.atomic():
        kept: list[int] = []
        for key in keys:
            child, parent = datasets.get(key.link.table), datasets.get(key.link.referenced)
            if child is None or parent is None:
                continue
            rel, _ = Relationship.objects.update_or_create(
                dataset=child,
                columns=list(key.link.columns),
                referenced=parent,
                referenced_columns=list(key.link.referenced_columns),
                defaults={"origin": RelationshipOrigin.FOREIGN_KEY, "constraint_name": key.name, "seen_at": now},
            )
            kept.append(rel.pk)
        gone, _ = (
            Relationship.objects.filter(dataset__source=source, origin=RelationshipOrigin.FOREIGN_KEY)
            .exclude(pk__in=kept)
            .delete()
        )
        audit.record(
            action="subject_relationships.discovered",
            actor=actor,
            target=source,
            metadata={"foreign_keys": len(kept), "removed": gone},
        )
    return len(kept)


def _suggest(column: Column, kind: str, evidence: str) -> bool:
    _, created = SubjectIdentifier.objects.get_or_create(
        column=column, kind=kind, defaults={"evidence": evidence[:255], "status": TagStatus.SUGGESTED}
    )
    return created


def identifiers_suggest(*, source: DataSource, actor: Any = None) -> int:
    """Discover the source's relationships, then suggest identifier columns; returns how many are new.
    `actor` None: a management command or a task; a person must be a privacy officer or a
    governance admin (it reads the source's catalog)."""
    if actor is not None:
        with refusal_recorded(action="subject_identifiers.suggest", actor=actor, target=source):
            if not may_suggest(actor):
                raise NotPermitted("Only privacy officers and governance admins ask for identifier suggestions.")
    relationships_discover(source=source, actor=actor)
    created = 0
    with transaction.atomic():
        tags = ColumnTag.objects.filter(
            column__dataset__source=source,
            column__is_present=True,
            column__dataset__is_present=True,
            status=TagStatus.CONFIRMED,
            tag__in=list(TAG_KINDS),
        ).select_related("column")
        for tag in tags:
            created += _suggest(tag.column, TAG_KINDS[tag.tag], f"confirmed {tag.tag} tag")
        for rel in Relationship.objects.filter(
            referenced__source=source, referenced__name__in=list(SUBJECT_TABLES)
        ).select_related("dataset", "referenced"):
            if len(rel.referenced_columns) != 1:
                continue
            column = Column.objects.filter(
                dataset=rel.referenced, name=rel.referenced_columns[0], is_present=True
            ).first()
            if column is not None:
                evidence = f"key of {rel.referenced.name}, referenced by {rel.dataset.name}"
                created += _suggest(column, SUBJECT_TABLES[rel.referenced.name], evidence)
        audit.record(action="subject_identifiers.suggested", actor=actor, target=source, metadata={"new": created})
    return created


def identifiers_suggest_named(*, actor: Any, source_name: str) -> int:
    """`identifiers_suggest` for a source named by a person (the API): who may ask is checked first."""
    with refusal_recorded(action="subject_identifiers.suggest", actor=actor):
        if not may_suggest(actor):
            raise NotPermitted("Only privacy officers and governance admins ask for identifier suggestions.")
        source = DataSource.objects.filter(name=source_name).first()
        if source is None:
            raise InvalidInput(f"There is no data source {source_name[:100]!r}.", field="source")
    return identifiers_suggest(source=source, actor=actor)


def subject_identifier_decide(*, identifier: SubjectIdentifier, decision: str, actor: Any) -> SubjectIdentifier:
    """Confirm or reject a suggested identifier (the dataset's owners and stewards, officers, admins)."""
    with refusal_recorded(action=f"subject_identifier.{decision}", actor=actor, target=identifier):
        if decision not in DECISIONS:
            raise InvalidInput("Choose confirm or reject.", field="decision")
        with transaction.atomic():
            identifier = (
                SubjectIdentifier.objects.select_for_update(of=("self",))
                .select_related("column__dataset")
                .get(pk=identifier.pk)
            )
            dataset = identifier.column.dataset
            if not may_decide_identifiers(actor, dataset):
                raise NotPermitted(f"Only an owner or steward of {dataset.qualified_name} can decide its identifiers.")
            before, identifier.status = identifier.status, DECISIONS[decision]
            identifier.decided_by, identifier.decided_at = actor, timezone.now()
            identifier.save(update_fields=["status", "decided_by", "decided_at"])
            audit.record(
                action=f"subject_identifier.{identifier.status}",
                actor=actor,
                target=identifier,
                changes={"status": [before, identifier.status]},
                metadata={"dataset": dataset.pk, "column": identifier.column.name, "kind": identifier.kind},
            )
    return identifier


def _columns(dataset: Dataset, names: Any, field: str) -> list[str]:
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise InvalidInput("Name one or more columns.", field=field)
    present = set(dataset.columns.filter(is_present=True).values_list("name", flat=True))
    unknown = [n for n in names if n not in present]
    if unknown:
        raise InvalidInput(f"{dataset.qualified_name} has no column {unknown[0]!r}.", field=field)
    return list(names)


def relationship_declare(
    *, actor: Any, dataset: Dataset, columns: list[str], referenced: Dataset, referenced_columns: list[str]
) -> Relationship:
    """The dataset's owner says its `columns` point at `referenced.referenced_columns` (same source)."""
    with refusal_recorded(action="subject_relationship.declare", actor=actor, target=dataset):
        with transaction.atomic():
            if not may_set_handling(actor, dataset):
                raise NotPermitted(
                    f"Only an owner or steward of {dataset.qualified_name} can declare its relationships."
                )
            if referenced.source_id != dataset.source_id:
                raise InvalidInput("A relationship joins two datasets of the same source.", field="referenced")
            cols = _columns(dataset, columns, "columns")
            refs = _columns(referenced, referenced_columns, "referenced_columns")
            if len(cols) != len(refs):
                raise InvalidInput("Name as many referenced columns as columns.", field="referenced_columns")
            if Relationship.objects.filter(
                dataset=dataset, columns=cols, referenced=referenced, referenced_columns=refs
            ).exists():
                raise ConflictError("This relationship is known already.", field="columns")
            rel = Relationship.objects.create(
                dataset=dataset,
                columns=cols,
                referenced=referenced,
                referenced_columns=refs,
                origin=RelationshipOrigin.DECLARED,
                declared_by=actor,
            )
            audit.record(
                action="subject_relationship.declared",
                actor=actor,
                target=dataset,
                metadata={"relationship": rel.pk, "referenced": referenced.pk, "columns": cols, "to": refs},
            )
    return rel


def dataset_handling_set(
    *, actor: Any, dataset: Dataset, action: str, legal_basis: str = "", reason: str = ""
) -> DatasetHandling:
    """What a request does to `dataset`: erase, anonymise, or retain (with a legal basis and a reason)."""
    with refusal_recorded(action="subject_handling.set", actor=actor, target=dataset):
        with transaction.atomic():
            if not may_set_handling(actor, dataset):
                raise NotPermitted(f"Only an owner or steward of {dataset.qualified_name} can set its handling.")
            if action not in HandlingAction.values:
                raise InvalidInput(f"Choose one of {', '.join(HandlingAction.values)}.", field="action")
            reason = (reason or "").strip()
            if action == HandlingAction.RETAIN:
                if legal_basis not in LegalBasis.values:
                    raise InvalidInput(f"Choose one of {', '.join(LegalBasis.values)}.", field="legal_basis")
                if not reason:
                    raise InvalidInput("Say why the data is retained (the law or the hold).", field="reason")
            else:
                legal_basis = ""
            handling, _ = DatasetHandling.objects.update_or_create(
                dataset=dataset,
                defaults={
                    "action": action,
                    "legal_basis": legal_basis,
                    "reason": reason[:2000],
                    "set_by": actor,
                    "set_at": timezone.now(),
                },
            )
            audit.record(
                action="subject_handling.set",
                actor=actor,
                target=dataset,
                metadata={"action": action, "legal_basis": legal_basis},
                reason=reason[:500],
            )
    return handling


SUGGEST_TASK = "subjects.tasks.suggest_identifiers"


def identifiers_suggest_after_sync(sender: Any, *, source_id: int, **kwargs: Any) -> None:
    """A catalog sync changed a source (governance.services.sync.catalog_synced, committed): a worker
    reads its foreign keys again and suggests identifiers (subjects.tasks.suggest_identifiers).
    PostgreSQL sources only (foreign keys are read from them); a broker that is down loses this one
    run (logged), and the next sync or `subjects_suggest` does it."""
    import logging

    from celery import current_app

    if not settings.SUBJECTS_SUGGEST_AFTER_SYNC:
        return
    if not DataSource.objects.filter(pk=source_id, kind=SourceKind.POSTGRESQL).exists():
        return
    try:
        current_app.send_task(SUGGEST_TASK, args=[source_id])
    except Exception:  # the sync stands; suggestions are advice, asked again at the next sync
        logging.getLogger(__name__).exception("Could not publish identifier suggestions for source %s", source_id)
