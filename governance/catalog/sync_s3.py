"""Catalog sync of an AWS source: sample its registered S3 prefixes and discover PII in them.

A bucket has no catalog, so the datasets of an AWS source are the prefixes an admin registered
(`dataset_register_s3`); the sync never creates or vanishes them. What it does, per present prefix:
read a bounded sample of the newest objects (`governance.catalog.s3_sample`: CSV, JSON lines,
Parquet, gzip), turn each field into a column of the dataset (created, retyped, vanished like a
table's columns) and run the same detectors on its values (`governance.catalog.sync_tags`).

Same two halves as the PostgreSQL sync: `read_s3_source()` talks to S3 outside any portal
transaction; `apply_s3_snapshot()` writes the differences inside the service's transaction. A
prefix that cannot be listed, or none of whose objects could be read, keeps its columns as they
were (reported in `sampling_failures`); objects that fail to parse or are too big are reported by
key and never fail the sync. Only an unreachable endpoint or undecryptable credentials do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from governance import progress
from governance.models import Dataset, DatasetKind, DataSource

from . import pii, s3_sample, s3_shapes
from .introspect import ColumnInfo, RelationInfo, SampleReport
from .sync import AppliedSync, SourceSnapshot, SyncFailed, SyncResult, _apply_columns, safe_error_message

# The stage a catalog sync of an AWS source reports while it samples its prefixes, one at a time.
SAMPLING_S3 = "sampling S3 prefixes for PII"


@dataclass
class S3Snapshot(SourceSnapshot):
    """A SourceSnapshot whose relations are the sampled prefixes, with what could not be read."""

    failures: dict[str, str] = field(default_factory=dict)  # "s3://bucket/prefix[/key]" -> why


def limits() -> s3_sample.Limits:
    return s3_sample.Limits(
        max_objects=int(getattr(settings, "S3_SAMPLE_OBJECTS", 5)),
        max_bytes=int(getattr(settings, "S3_SAMPLE_BYTES", 1_048_576)),
        max_rows=int(getattr(settings, "PII_SAMPLE_ROWS", 200)),
        max_listed=int(getattr(settings, "S3_SAMPLE_MAX_LISTED", 1000)),
    )


def _location(dataset: Dataset) -> str:
    return f"s3://{dataset.schema}/{dataset.name}" if dataset.name else f"s3://{dataset.schema}"


def relation_of(
    bucket: str, prefix: str, sample: s3_sample.PrefixSample
) -> tuple[RelationInfo, dict[str, list[str | None]]]:
    """The sampled prefix as a relation, and the values discovery reads per column."""
    columns = tuple(
        ColumnInfo(
            name=f.name,
            data_type=f.data_type,
            type_category=f.type_category,
            ordinal=f.ordinal,
            is_nullable=True,
            description="",
        )
        for f in sample.fields
    )
    # Values for the columns discovery samples in a database too (text-like, birth dates): the same
    # detectors, fed the same way, whichever store the data sits in. And for integer columns whose
    # values are identifier-long digit runs (a Parquet int64 of BSNs or bare phone numbers): in a
    # file, unlike a database, the type is whatever the writer inferred, and the values say more.
    values = {
        f.name: f.values
        for f in sample.fields
        if pii.should_sample(f.name, f.data_type, f.type_category) or s3_shapes.identifier_digits(f.values)
    }
    relation = RelationInfo(schema=bucket, name=prefix, kind=DatasetKind.S3_PREFIX, description="", columns=columns)
    return relation, values


def read_s3_source(source: DataSource) -> S3Snapshot:
    """Sample every present S3 prefix of the source. Raises SyncFailed when S3 cannot be reached
    or the credentials cannot be read; must run outside any portal transaction (network)."""
    from governance.provisioning import aws_target_for

    datasets = list(
        Dataset.objects.filter(source=source, kind=DatasetKind.S3_PREFIX, is_present=True).order_by("schema", "name")
    )
    snapshot = S3Snapshot(relations=[], samples=SampleReport())
    if not datasets:
        return snapshot
    try:
        target = aws_target_for(source)
    except ImproperlyConfigured as exc:  # the stored credential cannot be decrypted
        raise SyncFailed(f"Could not sync {source.name}: {safe_error_message(exc)}") from None
    client = s3_sample.client(target)
    bounds = limits()
    for done, dataset in enumerate(datasets):
        progress.report(done, len(datasets), SAMPLING_S3)
        where = _location(dataset)
        try:
            sample = s3_sample.sample_prefix(client, dataset.schema, dataset.name, bounds)
        except s3_sample.S3Unreachable as exc:
            raise SyncFailed(f"Could not sync {source.name}: {exc}") from None
        except s3_sample.S3SampleError as exc:
            snapshot.failures[where] = safe_error_message(exc, secrets=[target.secret_access_key])
            continue
        for key, why in sample.skipped.items():
            snapshot.failures[f"s3://{dataset.schema}/{key}"] = why
        if not sample.objects_read:
            if not sample.skipped:
                snapshot.failures[where] = "no objects to sample"
            continue  # nothing read: the columns stay as they are
        relation, values = relation_of(dataset.schema, dataset.name, sample)
        snapshot.relations.append(relation)
        snapshot.samples.values[relation.key] = values
    return snapshot


def apply_s3_snapshot(*, source: DataSource, snapshot: S3Snapshot, now: dt.datetime) -> AppliedSync:
    """Columns and PII tags of the sampled prefixes. Call inside `transaction.atomic()`, source locked."""
    result = SyncResult(relations_sampled=len(snapshot.relations))
    result.sampling_failures = dict(snapshot.failures)
    keys = {rel.key for rel in snapshot.relations}
    by_key = {
        (d.schema, d.name): d
        for d in Dataset.objects.filter(source=source, kind=DatasetKind.S3_PREFIX, is_present=True)
        if (d.schema, d.name) in keys
    }
    # A prefix unregistered between the read and now is simply left out.
    snapshot.relations = [rel for rel in snapshot.relations if rel.key in by_key]
    reopened = _apply_columns(snapshot, by_key, result, now)
    return AppliedSync(result=result, vanished=[], reappeared=[], reopened=reopened)
