"""Writes to the catalog: data sources, datasets, stewards, column tags."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from accounts.roles import is_governance_admin
from audit import services as audit

from ..backends import backend_for, has_backend
from ..catalog.owners import set_owner_perms
from ..catalog.sync import default_classification
from ..errors import InvalidInput, NotPermitted, PolicyViolation
from ..managed import refuse_if_managed
from ..models import (
    Classification,
    Column,
    ColumnTag,
    Dataset,
    DatasetKind,
    DataSource,
    SensitiveTag,
    TagStatus,
)
from ..policy import MINIMUM_CLASSIFICATION_FOR_TAG, decides_tags_everywhere, holds_dataset_perm, may_decide_tags
from ..provisioners.aws_iam import S3Location
from ..provisioners.postgres import ProvisioningError
from ..secrets import check_reference, dynamic_role
from .common import assign_fields, refusal_recorded, sealed
from .lineage import lineage_lock, lineage_refresh

STEWARD_PERMS = ("approve_access", "steward_dataset")

DATASOURCE_FIELDS = [
    "name",
    "kind",
    "description",
    "host",
    "port",
    "database",
    "username",
    "sslmode",
    "ssl_root_cert",
    "password_ref",
    "aws_account_id",
    "aws_region",
    "aws_endpoint_url",
    "include_schemas",
    "default_classification",
    "owner",
    "provisioning_enabled",
    "role_prefix",
    "auto_fix_drift",
    "credential_rotation_days",
    "rotate_secret_ref",
]
# `classification` is accepted as the name of the declared one (what people set; lineage decides
# the effective `Dataset.classification` from it, see governance.services.lineage).
DATASET_FIELDS = ["description", "tags", "declared_classification", "owner"]


def _check_password_ref(fields: dict[str, Any], source: DataSource) -> None:
    """A well-formed reference; `vault-db:` (a login leased from Vault) only on a kind that has one."""
    ref = fields.get("password_ref")
    if ref:
        try:
            fields["password_ref"] = check_reference(str(ref))
        except ValueError as exc:
            raise InvalidInput(str(exc), field="password_ref") from None
    kind = fields.get("kind", source.kind)
    if dynamic_role(fields.get("password_ref", source.password_ref) or ""):
        probe = DataSource(kind=kind)
        if not (has_backend(probe) and backend_for(probe).vault_database_login):
            raise InvalidInput(
                f"A vault-db: login is for PostgreSQL sources; a {kind} source cannot lease one.", field="password_ref"
            )


def _ensure_admin(actor: Any, what: str) -> None:
    if not (is_governance_admin(actor) or getattr(actor, "is_superuser", False)):
        raise NotPermitted(f"Only governance admins can {what}.")


def _ensure_steward(actor: Any, dataset: Dataset, what: str) -> None:
    if is_governance_admin(actor) or getattr(actor, "is_superuser", False):
        return
    if not holds_dataset_perm(actor, dataset, "steward_dataset"):
        raise NotPermitted(f"Only an owner or steward of {dataset.qualified_name} can {what}.")


# --- data sources -----------------------------------------------------------------------------


def datasource_create(*, actor: Any, name: str, password: str = "", **fields: Any) -> DataSource:
    """Register a data source. The password is encrypted before it touches the database."""
    with refusal_recorded(action="datasource.create", actor=actor, metadata={"name": name}), transaction.atomic():
        _ensure_admin(actor, "register data sources")
        unknown = set(fields) - set(DATASOURCE_FIELDS)
        if unknown:
            raise InvalidInput(f"Unknown data source field(s): {', '.join(sorted(unknown))}.")
        _check_password_ref(fields, DataSource())
        if DataSource.objects.filter(name=name).exists():
            raise InvalidInput(f"A data source named {name!r} already exists.", field="name")
        source = DataSource(name=name, **fields)
        if password:
            source.password_encrypted = sealed(password, field="password")
            source.credential_changed_at = timezone.now()
        source.full_clean()
        source.save()
        audit.record(
            action="datasource.created",
            actor=actor,
            target=source,
            changes=audit.diff({}, {**audit.snapshot(source, DATASOURCE_FIELDS), "password": bool(password)}),
        )
    return source


def datasource_update(*, source: DataSource, actor: Any, password: str | None = None, **fields: Any) -> DataSource:
    """Change connection settings. `password=None` keeps the stored one; "" clears it."""
    with refusal_recorded(action="datasource.update", actor=actor, target=source), transaction.atomic():
        _ensure_admin(actor, "change data sources")
        source = DataSource.objects.select_for_update().get(pk=source.pk)
        _check_password_ref(fields, source)
        changes = assign_fields(source, fields, DATASOURCE_FIELDS)
        moved = {"name", "aws_account_id", "kind"} & set(changes)
        if has_backend(source) and backend_for(source).named_after_source and moved and _holds_iam_policies(source):
            # The portal's IAM policies live under a path named after the source, in that account:
            # renaming or re-pointing it would orphan them (revokes would find nothing to remove).
            raise PolicyViolation(
                f"{source.name} still has grants provisioned in IAM: revoke them (or let them end) before "
                f"changing {', '.join(sorted(moved))}.",
                field=sorted(moved)[0],
            )
        if password is not None:
            source.password_encrypted = sealed(password, field="password") if password else ""
            source.credential_changed_at = timezone.now() if password else None
            changes["password"] = [audit.REDACTED, audit.REDACTED]
        if not changes:
            return source
        source.full_clean()
        source.save()
        audit.record(action="datasource.updated", actor=actor, target=source, changes=changes)
    return source


def _holds_iam_policies(source: DataSource) -> bool:
    """Grants that are, or may still be, in IAM: in force or failed, or with a job not finished."""
    from django.db.models import Q

    from ..models import Grant, GrantStatus, JobStatus

    held = Q(status__in=[GrantStatus.APPROVED, GrantStatus.ACTIVE, GrantStatus.FAILED])
    unfinished = Q(jobs__status__in=[JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FAILED])
    return Grant.objects.filter(held | unfinished, dataset__source_id=source.pk).exists()


# --- datasets ---------------------------------------------------------------------------------


def dataset_register_s3(
    *,
    source: DataSource,
    actor: Any,
    bucket: str,
    prefix: str = "",
    description: str = "",
    classification: Classification | None = None,
    owner: Any = None,
) -> Dataset:
    """Register an S3 prefix of an AWS source as a dataset (a bucket holds objects, not a catalog:
    the sync samples registered prefixes for their fields and PII, it never finds new ones).
    Governed like a table from then on: its grants become IAM policies scoped to `s3://bucket/prefix/*`."""
    with (
        refusal_recorded(action="dataset.register", actor=actor, metadata={"bucket": bucket, "prefix": prefix}),
        transaction.atomic(),
    ):
        _ensure_admin(actor, "register datasets")
        if not (has_backend(source) and backend_for(source).registers_datasets):
            raise InvalidInput("S3 prefixes are registered on AWS sources only.", field="source")
        try:
            location = S3Location(bucket=bucket, prefix=prefix.strip("/"))
        except ProvisioningError as exc:
            raise InvalidInput(exc.message, field="prefix" if "prefix" in exc.message else "bucket") from None
        if Dataset.objects.filter(source=source, schema=location.bucket, name=location.prefix).exists():
            raise InvalidInput(f"{location} is already registered on {source.name}.", field="prefix")
        dataset = Dataset.objects.create(
            source=source,
            schema=location.bucket,
            name=location.prefix,
            kind=DatasetKind.S3_PREFIX,
            description=description,
            classification=classification or default_classification(source),
            owner=owner or source.owner,
            last_seen_at=timezone.now(),
        )
        set_owner_perms(dataset, None, dataset.owner)
        audit.record(
            action="dataset.registered",
            actor=actor,
            target=dataset,
            metadata={"source": source.name, "location": str(location), "classification": dataset.classification.slug},
        )
    return dataset


def dataset_update(*, dataset: Dataset, actor: Any, reason: str = "", **fields: Any) -> Dataset:
    """Edit a dataset. Stewards may edit description and tags; the (declared) classification and
    the owner are for governance admins. A classification below what its confirmed PII requires is
    refused. A new declared classification is followed through lineage at once: the dataset's
    effective classification, and that of every view reading it, in the same transaction."""
    if "classification" in fields:
        fields["declared_classification"] = fields.pop("classification")
    with refusal_recorded(action="dataset.update", actor=actor, target=dataset), transaction.atomic():
        if "declared_classification" in fields:
            lineage_lock([dataset.source_id])  # before the row lock (see lineage_lock)
        dataset = (
            Dataset.objects.select_for_update(of=("self",))
            .select_related("declared_classification", "owner")
            .get(pk=dataset.pk)
        )
        if {"declared_classification", "owner"} & set(fields):
            _ensure_admin(actor, "change a dataset's classification or owner")
            refuse_if_managed(dataset)  # a policy document holds its owner and classification
        else:
            _ensure_steward(actor, dataset, "edit it")
        old_owner = dataset.owner
        changes = assign_fields(dataset, fields, DATASET_FIELDS)
        if not changes:
            return dataset
        if "declared_classification" in changes:
            floor = minimum_classification(dataset)
            if floor is not None and dataset.declared_classification.rank < floor.rank:
                raise PolicyViolation(
                    f"{dataset.qualified_name} has confirmed sensitive columns and must stay at least {floor.name}.",
                    field="classification",
                )
        dataset.save()
        if "owner" in changes:
            set_owner_perms(dataset, old_owner, dataset.owner)
        audit.record(action="dataset.updated", actor=actor, target=dataset, changes=changes, reason=reason)
        if "declared_classification" in changes:
            lineage_refresh(dataset_ids=[dataset.pk], actor=actor, reason=f"{dataset.qualified_name} was reclassified")
            dataset.refresh_from_db(fields=["classification"])
    return dataset


def minimum_classification(dataset: Dataset) -> Classification | None:
    """The lowest classification the dataset's confirmed tags allow, or None when untagged."""
    tags = set(
        ColumnTag.objects.filter(column__dataset=dataset, status=TagStatus.CONFIRMED).values_list("tag", flat=True)
    )
    slugs = {MINIMUM_CLASSIFICATION_FOR_TAG[t] for t in tags if t in MINIMUM_CLASSIFICATION_FOR_TAG}
    if not slugs:
        return None
    return Classification.objects.filter(slug__in=slugs).order_by("-rank").first()


def dataset_steward_add(*, dataset: Dataset, user: Any, actor: Any) -> None:
    """Make `user` a steward: they confirm tags and approve the owner stage of requests."""
    with refusal_recorded(action="dataset.steward_add", actor=actor, target=dataset), transaction.atomic():
        _ensure_admin(actor, "appoint stewards")
        refuse_if_managed(dataset)  # a policy document lists its stewards
        if not user.is_active:
            raise InvalidInput(f"{user.username} is not an active user.", field="user")
        for perm in STEWARD_PERMS:
            assign_perm(perm, user, dataset)
        audit.record(action="dataset.steward_added", actor=actor, target=dataset, metadata={"user": user.username})


def dataset_steward_remove(*, dataset: Dataset, user: Any, actor: Any) -> None:
    with refusal_recorded(action="dataset.steward_remove", actor=actor, target=dataset), transaction.atomic():
        _ensure_admin(actor, "remove stewards")
        refuse_if_managed(dataset)
        if dataset.owner_id == user.pk:
            raise InvalidInput("The owner is always a steward; change the owner instead.", field="user")
        for perm in STEWARD_PERMS:
            remove_perm(perm, user, dataset)
        audit.record(action="dataset.steward_removed", actor=actor, target=dataset, metadata={"user": user.username})


def dataset_set_stewards(*, dataset: Dataset, users: Iterable[Any], actor: Any) -> None:
    """Make the steward set exactly `users` (the admin form's multi-select)."""
    from ..selectors.catalog import dataset_stewards

    wanted = {u.pk: u for u in users}
    current = {u.pk: u for u in dataset_stewards(dataset)}
    for pk, user in wanted.items():
        if pk not in current:
            dataset_steward_add(dataset=dataset, user=user, actor=actor)
    for pk, user in current.items():
        if pk not in wanted:
            dataset_steward_remove(dataset=dataset, user=user, actor=actor)


# --- column tags --------------------------------------------------------------------------------


def _raise_classification_for(dataset: Dataset, tag: str, actor: Any) -> None:
    floor_slug = MINIMUM_CLASSIFICATION_FOR_TAG.get(tag)
    if not floor_slug:
        return
    floor = Classification.objects.filter(slug=floor_slug).first()
    dataset = (
        Dataset.objects.select_for_update(of=("self",)).select_related("declared_classification").get(pk=dataset.pk)
    )
    if floor is None or dataset.declared_classification.rank >= floor.rank:
        return
    before = dataset.declared_classification
    dataset.declared_classification = floor
    dataset.save(update_fields=["declared_classification", "updated_at"])
    audit.record(
        action="dataset.classification_raised",
        actor=actor,
        target=dataset,
        changes={"declared_classification": [before.pk, floor.pk]},
        reason=f"Confirmed {SensitiveTag(tag).label} data needs at least {floor.name} (was {before.name}).",
    )


def _decide_tag(*, tag: ColumnTag, actor: Any, status: str) -> ColumnTag:
    verb = "confirm" if status == TagStatus.CONFIRMED else "reject"
    with refusal_recorded(action=f"column_tag.{verb}", actor=actor, target=tag), transaction.atomic():
        lineage_lock(ColumnTag.objects.filter(pk=tag.pk).values_list("column__dataset__source_id", flat=True))
        tag = ColumnTag.objects.select_for_update(of=("self",)).select_related("column__dataset").get(pk=tag.pk)
        if not may_decide_tags(actor, tag.column.dataset):
            raise NotPermitted(
                f"Only an owner or steward of {tag.column.dataset.qualified_name} can {verb} column tags."
            )
        if tag.status == status:
            return tag
        if tag.status == TagStatus.CONFIRMED and not decides_tags_everywhere(actor):
            # A confirmed tag is what keeps PII out of whole-table grants; a steward who could drop
            # it could then request the column unnoticed.
            raise NotPermitted("Only security officers and governance admins can reject a confirmed tag.")
        before = tag.status
        tag.status = status
        tag.decided_by = actor
        tag.decided_at = timezone.now()
        tag.save(update_fields=["status", "decided_by", "decided_at"])
        audit.record(
            action=f"column_tag.{status}",
            actor=actor,
            target=tag,
            changes={"status": [before, status]},
            metadata={"column": tag.column.name, "tag": tag.tag},
        )
        if status == TagStatus.CONFIRMED:
            _raise_classification_for(tag.column.dataset, tag.tag, actor)
        # Views reading this column carry the tag (or stop carrying it), and the raise above reaches them.
        lineage_refresh(dataset_ids=[tag.column.dataset_id], actor=actor, reason=f"column tag {verb}ed")
    return tag


def column_tag_confirm(*, tag: ColumnTag, actor: Any) -> ColumnTag:
    """A steward confirms a suggested tag; PII lifts the dataset to at least Confidential."""
    return _decide_tag(tag=tag, actor=actor, status=TagStatus.CONFIRMED)


def column_tag_reject(*, tag: ColumnTag, actor: Any) -> ColumnTag:
    """A steward rejects a suggestion; it stays rejected across later syncs."""
    return _decide_tag(tag=tag, actor=actor, status=TagStatus.REJECTED)


def column_tag_add(*, column: Column, tag: str, actor: Any) -> ColumnTag:
    """A steward tags a column by hand (confirmed at once)."""
    with refusal_recorded(action="column_tag.add", actor=actor, target=column), transaction.atomic():
        _ensure_steward(actor, column.dataset, "tag columns")
        if tag not in SensitiveTag.values:
            raise InvalidInput(f"Unknown tag {tag!r}; use one of {', '.join(SensitiveTag.values)}.", field="tag")
        obj, _ = ColumnTag.objects.get_or_create(column=column, tag=tag, defaults={"evidence": "added by hand"})
        return _decide_tag(tag=obj, actor=actor, status=TagStatus.CONFIRMED)
