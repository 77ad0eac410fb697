"""Catalog sync machinery: read a source (network, no portal transaction), then apply the difference.

The service `governance.services.sync.datasource_sync` drives the two halves:

1. `read_source()` connects to the target, reads its relations and columns in one catalog query
   and samples values of the columns whose PII tags may need (re)discovery. It runs before any
   portal transaction is opened: a slow or unreachable target never holds portal row locks.
2. `apply_snapshot()` runs inside the service's `transaction.atomic()` with the source row locked,
   and turns the snapshot into inserts/updates of Dataset, Column and ColumnTag rows. It writes only
   what differs, so that a second sync in a row writes nothing at all (no `updated_at` moves).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg2
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from governance.dynamic_credentials import source_login
from governance.errors import DomainError
from governance.models import (
    Classification,
    Column,
    ColumnTag,
    Dataset,
    DatasetKind,
    DataSource,
)
from governance.secrets import dynamic_role

from . import introspect, pii, sync_tags
from .introspect import RelationInfo, SampleReport
from .lineage_analysis import LineageSnapshot
from .owners import set_owner_perms
from .sync_lineage import apply_lineage, read_lineage


class SyncFailed(DomainError):
    """The source could not be read (unreachable, bad credentials, query failure)."""

    code = "sync_failed"
    status = 502


@dataclass
class SyncResult:
    """What one sync changed in the catalog; `changed` decides whether it is audited at all."""

    datasets_created: int = 0
    datasets_updated: int = 0
    datasets_vanished: int = 0
    datasets_reappeared: int = 0
    columns_created: int = 0
    columns_updated: int = 0
    columns_vanished: int = 0
    columns_reappeared: int = 0
    tags_suggested: int = 0
    tags_updated: int = 0  # undecided suggestions whose confidence, evidence or findings changed
    tags_withdrawn: int = 0  # undecided suggestions the detectors no longer make (deleted)
    tags_reopened: int = 0  # rejections reopened because the data changed kind (sync_tags)
    lineage_changed: int = 0  # dependency and derivation edges, lineage notes and risks written
    # Informational, not changes: how many relations were sampled, which could not be, how many
    # columns discovery looked at, and which suggestions were withdrawn (named in the audit event).
    relations_sampled: int = 0
    sampling_failures: dict[str, str] = field(default_factory=dict)
    columns_evaluated: int = 0
    withdrawn: list[dict[str, Any]] = field(default_factory=list)

    CHANGE_FIELDS = (
        "datasets_created",
        "datasets_updated",
        "datasets_vanished",
        "datasets_reappeared",
        "columns_created",
        "columns_updated",
        "columns_vanished",
        "columns_reappeared",
        "tags_suggested",
        "tags_updated",
        "tags_withdrawn",
        "tags_reopened",
        "lineage_changed",
    )

    @property
    def changed(self) -> bool:
        return any(getattr(self, name) for name in self.CHANGE_FIELDS)

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.CHANGE_FIELDS}

    def as_metadata(self) -> dict[str, Any]:
        data = asdict(self)
        data["sampling_failures"] = dict(list(self.sampling_failures.items())[:20])
        data["withdrawn"] = self.withdrawn[:50]
        return data

    def summary(self) -> str:
        text = (
            f"{self.datasets_created} datasets created, {self.datasets_updated} updated, "
            f"{self.datasets_vanished} vanished, {self.datasets_reappeared} reappeared; "
            f"{self.columns_created} columns created, {self.columns_updated} updated, "
            f"{self.columns_vanished} vanished, {self.columns_reappeared} reappeared; "
            f"{self.tags_suggested} PII tags suggested, {self.tags_updated} updated, "
            f"{self.tags_withdrawn} withdrawn, {self.tags_reopened} reopened; {self.lineage_changed} lineage changes"
        )
        if self.sampling_failures:
            text += f" ({len(self.sampling_failures)} relations could not be sampled)"
        return text


@dataclass
class SourceSnapshot:
    relations: list[RelationInfo]
    samples: SampleReport
    lineage: LineageSnapshot = field(default_factory=LineageSnapshot)


# --- reading the source (network) ------------------------------------------------------------------


def _in_scope(source: DataSource, schema: str) -> bool:
    return not source.include_schemas or schema in source.include_schemas


# {(schema, table): {column: (data_type, is_present, {tag: (status, findings)}, pii_evaluated_at)}}
KnownColumns = dict[tuple[str, str], dict[str, tuple[str, bool, dict[str, tuple[str, Any]], dt.datetime | None]]]


def known_columns(source: DataSource) -> KnownColumns:
    """{(schema, table): {column: (data_type, is_present, {tag: (status, findings)}, pii_evaluated_at)}}
    as the portal knows it (two queries).

    Read before connecting, outside any transaction: it only decides which columns are worth
    sampling. If another sync changes the catalog meanwhile, `apply_snapshot` still diffs against
    the locked, current rows; at worst a column is judged without its values (adding suggestions only).
    """
    out: KnownColumns = defaultdict(dict)
    tags: dict[tuple[str, str, str], dict[str, tuple[str, Any]]] = defaultdict(dict)
    for schema, table, name, tag, status, findings in ColumnTag.objects.filter(
        column__dataset__source=source
    ).values_list("column__dataset__schema", "column__dataset__name", "column__name", "tag", "status", "findings"):
        tags[(schema, table, name)][tag] = (status, findings)
    rows = Column.objects.filter(dataset__source=source).values_list(
        "dataset__schema", "dataset__name", "name", "data_type", "is_present", "pii_evaluated_at"
    )
    for schema, table, name, data_type, present, evaluated_at in rows:
        out[(schema, table)][name] = (data_type, present, tags.get((schema, table, name), {}), evaluated_at)
    return out


def columns_to_sample(
    relations: Iterable[RelationInfo], known: KnownColumns, now: dt.datetime
) -> dict[tuple[str, str], list[str]]:
    """The columns discovery evaluates this sync (sync_tags.needs_discovery) whose values it reads."""
    at_least = sync_tags.threshold()
    every = sync_tags.resample_untagged_seconds()
    wanted: dict[tuple[str, str], list[str]] = {}
    for rel in relations:
        if rel.kind == DatasetKind.FOREIGN_TABLE:
            continue  # reading it would reach a third system
        have = known.get(rel.key, {})
        names = []
        for c in rel.columns:
            data_type, present, tags, evaluated_at = have.get(c.name, (None, False, {}, None))
            due = sync_tags.untagged_due(evaluated_at, now, every)
            if sync_tags.needs_discovery(c, data_type, present, tags, at_least, due) and pii.should_sample(
                c.name, c.data_type, c.type_category
            ):
                names.append(c.name)
        if names:
            wanted[rel.key] = names
    return wanted


_PASSWORD_IN_DSN = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def safe_error_message(exc: BaseException, *, secrets: Iterable[str] = ()) -> str:
    """One line, no secret: libpq errors name host, port and user, and a malformed connection
    string can be quoted back, password included. Every known secret and any `password=...` is
    masked, newlines are folded, and the text is capped."""
    text = str(exc) or type(exc).__name__
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _PASSWORD_IN_DSN.sub(r"\1***", text)
    return " ".join(text.split())[:500]


def read_source(source: DataSource, *, sample_rows: int | None = None) -> SourceSnapshot:
    """Connect, read every relation and column, sample what discovery needs. Raises SyncFailed.

    Must not run inside a portal transaction (the caller checks): it waits on the network.
    """
    limit = settings.PII_SAMPLE_ROWS if sample_rows is None else sample_rows
    known = known_columns(source)
    secrets: list[str] = []
    try:
        user, password = source_login(source)
        # A leased login's username is as secret as its password (it is a login Vault made).
        secrets += [password, user] if dynamic_role(source.password_ref) else [password]
        with introspect.connect(source) as conn:
            relations = introspect.read_relations(conn, include_schemas=source.include_schemas)
            lineage_snapshot, pulled_in = read_lineage(conn, relations)
            relations = sorted([*relations, *pulled_in], key=lambda r: r.key)
            wanted = columns_to_sample(relations, known, timezone.now()) if limit > 0 else {}
            samples = introspect.sample_relations(conn, wanted, limit=limit)
    except ImproperlyConfigured as exc:  # the stored credential cannot be decrypted
        raise SyncFailed(f"Could not sync {source.name}: {safe_error_message(exc)}") from None
    except (psycopg2.Error, OSError) as exc:  # refused, DNS, TLS, auth, timeouts: "cannot read it" to the user
        message = safe_error_message(exc, secrets=secrets)
        raise SyncFailed(f"Could not sync {source.name}: {message}") from None
    return SourceSnapshot(relations=relations, samples=samples, lineage=lineage_snapshot)


# --- applying the snapshot (portal transaction) ----------------------------------------------------


def default_classification(source: DataSource) -> Classification:
    """The source's default, else "internal", else the lowest rank: new data is never born Public."""
    if source.default_classification_id:
        return Classification.objects.get(pk=source.default_classification_id)
    found = Classification.objects.filter(slug="internal").first() or Classification.objects.order_by("rank").first()
    if found is None:
        raise SyncFailed("No classification exists; run the migrations before syncing.")
    return found


@dataclass
class AppliedSync:
    result: SyncResult
    vanished: list[Dataset]
    reappeared: list[Dataset]
    reopened: list[tuple[ColumnTag, dict[str, Any]]] = field(default_factory=list)  # (tag, old decision)


def apply_snapshot(*, source: DataSource, snapshot: SourceSnapshot, now: dt.datetime) -> AppliedSync:
    """Make the catalog match the snapshot. Call inside `transaction.atomic()` with the source locked.

    - Datasets: new ones are created (default classification, the source's owner with owner object
      permissions); kind or a changed source comment updates them; vanished ones are flagged
      (`is_present=False`, `vanished_at`), never deleted, because grants and audit events point at
      them; reappearing ones are un-flagged. Only datasets in scope (`include_schemas`) can vanish.
    - Columns: likewise, per present dataset.
    - A comment from the source overwrites the catalog description only when it is non-empty and
      differs: a description written in the portal survives syncs of an uncommented table.
    - `last_seen_at` is written only with another change, so an unchanged catalog is not rewritten.
    - PII tags: see `governance.catalog.sync_tags` (new, retyped, reappeared, untagged and undecided
      columns are evaluated again; confirmed tags are never touched; rejected ones only reopen when
      the data changed kind).
    """
    result = SyncResult(relations_sampled=len(snapshot.samples.values))
    result.sampling_failures = {f"{s}.{t}": why for (s, t), why in snapshot.samples.failed.items()}
    classification: Classification | None = None
    existing = {(d.schema, d.name): d for d in Dataset.objects.filter(source=source).select_related("source")}
    seen: set[tuple[str, str]] = set()
    created: list[Dataset] = []
    reappeared: list[Dataset] = []
    by_key: dict[tuple[str, str], Dataset] = {}

    for rel in snapshot.relations:
        seen.add(rel.key)
        dataset = existing.get(rel.key)
        if dataset is None:
            if classification is None:
                classification = default_classification(source)
            dataset = Dataset(
                source=source,
                schema=rel.schema,
                name=rel.name,
                kind=rel.kind,
                description=rel.description,
                classification=classification,
                declared_classification=classification,
                owner_id=source.owner_id,
                is_present=True,
                last_seen_at=now,
            )
            created.append(dataset)
        else:
            fields: list[str] = []
            if dataset.kind != rel.kind:
                dataset.kind = rel.kind
                fields.append("kind")
            if rel.description and dataset.description != rel.description:
                dataset.description = rel.description
                fields.append("description")
            came_back = not dataset.is_present
            if came_back:
                dataset.is_present = True
                dataset.vanished_at = None
                fields += ["is_present", "vanished_at"]
            if fields:
                dataset.last_seen_at = now
                dataset.save(update_fields=[*fields, "last_seen_at", "updated_at"])
                if came_back:
                    result.datasets_reappeared += 1
                    reappeared.append(dataset)
                if {"kind", "description"} & set(fields):
                    result.datasets_updated += 1
        by_key[rel.key] = dataset

    if created:
        Dataset.objects.bulk_create(created)
        result.datasets_created = len(created)
        if source.owner_id:
            owner = source.owner
            for dataset in created:
                set_owner_perms(dataset, None, owner)

    vanished = [d for key, d in existing.items() if key not in seen and d.is_present and _in_scope(source, d.schema)]
    for dataset in vanished:
        dataset.is_present = False
        dataset.vanished_at = now
        dataset.save(update_fields=["is_present", "vanished_at", "updated_at"])
    result.datasets_vanished = len(vanished)

    reopened = _apply_columns(snapshot, by_key, result, now)
    lineage_changes = apply_lineage(snapshot.lineage, by_key)
    result.lineage_changed = lineage_changes.dependencies + lineage_changes.derivations + lineage_changes.datasets
    return AppliedSync(result=result, vanished=vanished, reappeared=reappeared, reopened=reopened)


def _apply_columns(
    snapshot: SourceSnapshot, by_key: dict[tuple[str, str], Dataset], result: SyncResult, now: dt.datetime
) -> list[tuple[ColumnTag, dict[str, Any]]]:
    """Upsert the columns of the snapshot's relations, then (re-)evaluate their PII tags.

    Returns the reopened rejections with their old decision, for the caller's audit events."""
    dataset_ids = [d.pk for d in by_key.values()]
    current: dict[int, dict[str, Column]] = defaultdict(dict)
    for column in Column.objects.filter(dataset_id__in=dataset_ids):
        current[column.dataset_id][column.name] = column
    # Every tag of these datasets, in one query: which columns discovery must look at again.
    tags_of: dict[int, dict[str, tuple[str, Any]]] = defaultdict(dict)
    for column_id, tag, status, findings in ColumnTag.objects.filter(column__dataset_id__in=dataset_ids).values_list(
        "column_id", "tag", "status", "findings"
    ):
        tags_of[column_id][tag] = (status, findings)
    at_least = sync_tags.threshold()
    every = sync_tags.resample_untagged_seconds()

    new_columns: list[Column] = []
    changed_columns: list[Column] = []
    changed_fields: set[str] = set()
    discover: list[sync_tags.Discovery] = []

    for rel in snapshot.relations:
        dataset = by_key[rel.key]
        have = current.get(dataset.pk, {})
        live: set[str] = set()
        sampleable = rel.kind != DatasetKind.FOREIGN_TABLE
        # An S3 field's type is inferred from the sampled rows (text one sync, number the next when
        # only digits were sampled): its change is sampling noise, not the data changing kind, so it
        # never reopens a rejection there; a new basis in the values still does (sync_tags).
        inferred_types = rel.kind == DatasetKind.S3_PREFIX
        for info in rel.columns:
            live.add(info.name)
            found = have.get(info.name)
            if found is None:
                column = Column(
                    dataset=dataset,
                    name=info.name,
                    data_type=info.data_type,
                    ordinal=info.ordinal,
                    is_nullable=info.is_nullable,
                    description=info.description,
                    is_present=True,
                )
                new_columns.append(column)
                discover.append(sync_tags.Discovery(column, info, rel.key, dataset.qualified_name, None, sampleable))
                continue
            column = found
            old_type, was_present = column.data_type, column.is_present
            fields = []
            for attr, value in (
                ("data_type", info.data_type),
                ("ordinal", info.ordinal),
                ("is_nullable", info.is_nullable),
            ):
                if getattr(column, attr) != value:
                    setattr(column, attr, value)
                    fields.append(attr)
            if info.description and column.description != info.description:
                column.description = info.description
                fields.append("description")
            came_back = not column.is_present
            if came_back:
                column.is_present = True
                fields.append("is_present")
                result.columns_reappeared += 1
            if fields:
                changed_columns.append(column)
                changed_fields.update(fields)
                if set(fields) - {"is_present"}:
                    result.columns_updated += 1
            due = sync_tags.untagged_due(column.pii_evaluated_at, now, every)
            if sync_tags.needs_discovery(info, old_type, was_present, tags_of.get(column.pk, {}), at_least, due):
                retyped = None
                if (
                    inferred_types is False
                    and "data_type" in fields
                    and sync_tags.kind_of(old_type) != sync_tags.kind_of(info.data_type, info.type_category)
                ):
                    retyped = old_type
                discover.append(sync_tags.Discovery(column, info, rel.key, dataset.qualified_name, retyped, sampleable))
        for name, column in have.items():
            if name not in live and column.is_present:
                column.is_present = False
                changed_columns.append(column)
                changed_fields.add("is_present")
                result.columns_vanished += 1

    if new_columns:
        Column.objects.bulk_create(new_columns)
        result.columns_created = len(new_columns)
    if changed_columns:
        Column.objects.bulk_update(changed_columns, sorted(changed_fields))

    changes = sync_tags.apply_discovery(discover, snapshot.samples.values, now)
    result.tags_suggested = changes.suggested
    result.tags_updated = changes.updated
    result.tags_withdrawn = len(changes.withdrawn)
    result.tags_reopened = len(changes.reopened)
    result.withdrawn = changes.withdrawn
    result.columns_evaluated = changes.evaluated
    return changes.reopened
