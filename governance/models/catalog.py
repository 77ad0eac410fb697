"""The catalog: where data lives, how sensitive it is, who answers for it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import URLValidator
from django.db import models
from django.db.models import Q
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

from .. import durations
from .history import governed


class ApprovalStage(models.TextChoices):
    OWNER = "owner", "Dataset owner or steward"
    SECURITY_OFFICER = "security_officer", "Security officer"


STAGE_ORDER = [ApprovalStage.OWNER.value, ApprovalStage.SECURITY_OFFICER.value]


@governed()
class Classification(models.Model):
    """A sensitivity level with its approval policy, as data (see governance.policy).

    `rank` orders the levels: a higher rank is more sensitive. Confirming PII on a dataset whose
    classification ranks below `PII_MINIMUM_SLUG` raises it to that level.
    """

    name = models.CharField(max_length=50, unique=True)
    slug = models.SlugField(max_length=50, unique=True)
    rank = models.PositiveSmallIntegerField(unique=True, help_text="Higher is more sensitive.")
    description = models.TextField(blank=True)
    approval_stages = ArrayField(
        models.CharField(max_length=32, choices=ApprovalStage.choices),
        default=list,
        blank=True,
        help_text="Stages a request must pass, in order. Empty means no human approval is needed.",
    )
    # Durations in hours or days (governance.durations says them in words). The floor
    # (GRANT_MIN_DURATION_FLOOR_SECONDS, an hour) is checked by the policy service and the forms.
    min_duration = models.DurationField(
        default=dt.timedelta(hours=1), help_text="Shortest grant a request may ask for (hours or days)."
    )
    max_duration = models.DurationField(help_text="Longest grant a request may ask for (hours or days).")
    justification_required = models.BooleanField(default=False)
    auto_approve = models.BooleanField(
        default=False, help_text="Read requests without PII are approved at once when there are no stages."
    )
    pii_requires_explicit_request = models.BooleanField(
        default=False,
        help_text="A request that does not name the PII columns covers only the non-PII columns.",
    )
    allow_pii_access = models.BooleanField(default=True, help_text="PII columns may be requested at all.")
    terminate_sessions_on_revoke = models.BooleanField(
        default=False,
        help_text="Revoking a grant on such data also ends the grantee's open sessions on that source "
        "(a running query on revoked data does not go on). On for Restricted by default.",
    )

    class Meta:
        ordering = ["rank"]
        constraints = [
            models.CheckConstraint(
                condition=Q(min_duration__gt=dt.timedelta(0)), name="classification_min_duration_positive"
            ),
            models.CheckConstraint(
                condition=Q(min_duration__lte=models.F("max_duration")),
                name="classification_min_duration_within_max",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def max_duration_days(self) -> float:
        """The longest duration in days (the API's and old callers' unit; may be a fraction)."""
        days = self.max_duration.total_seconds() / 86400
        return int(days) if days == int(days) else round(days, 4)

    @max_duration_days.setter
    def max_duration_days(self, days: float) -> None:
        self.max_duration = dt.timedelta(days=days)

    @property
    def min_duration_text(self) -> str:
        return durations.words(self.min_duration)

    @property
    def max_duration_text(self) -> str:
        return durations.words(self.max_duration)


class SourceKind(models.TextChoices):
    POSTGRESQL = "postgresql", "PostgreSQL"
    AWS = "aws", "AWS (S3 / IAM)"


class SslMode(models.TextChoices):
    DISABLE = "disable", "disable"
    PREFER = "prefer", "prefer"
    REQUIRE = "require", "require"
    VERIFY_CA = "verify-ca", "verify-ca"
    VERIFY_FULL = "verify-full", "verify-full"


@governed(exclude=("password_encrypted",))
class DataSource(models.Model):
    """A system that holds datasets, and how the portal reaches it.

    The password is stored only as a MultiFernet token (`governance.crypto`); it is never shown back,
    never put in an audit diff and never logged. `__repr__`/`__str__` show only the name.
    """

    name = models.SlugField(max_length=100, unique=True, help_text="Short unique name, e.g. demo_warehouse.")
    kind = models.CharField(max_length=16, choices=SourceKind.choices, default=SourceKind.POSTGRESQL)
    description = models.TextField(blank=True)
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(default=5432)
    database = models.CharField(max_length=255, blank=True)
    username = models.CharField(max_length=255, blank=True)
    sslmode = models.CharField(max_length=16, choices=SslMode.choices, default=SslMode.PREFER)
    password_ref = models.CharField(
        max_length=700,
        blank=True,
        help_text=(
            "Instead of a stored password: env:NAME, aws-sm:SECRET_ID#KEY or vault:PATH#KEY, resolved at use time;"
            " or vault-db:MOUNT/ROLE, a whole login (username too) leased from Vault's database engine."
        ),
    )
    ssl_root_cert = models.TextField(
        blank=True,
        help_text="PEM of the CA(s) that sign the server's certificate, for verify-ca / verify-full. "
        "Empty: the system's trust store (~/.postgresql/root.crt).",
    )
    password_encrypted = models.TextField(blank=True, editable=False)
    # kind "aws": S3 datasets (schema = bucket, name = prefix) governed by IAM policies. The access
    # key id goes in `username` and its secret in the password (or `password_ref`); both empty:
    # boto3's ambient credential chain (instance profile, environment).
    aws_account_id = models.CharField(
        max_length=12, blank=True, help_text="AWS: the account the portal's IAM policies live in (12 digits)."
    )
    aws_region = models.CharField(max_length=32, blank=True, help_text="AWS: the region for API calls.")
    aws_endpoint_url = models.CharField(
        max_length=200,
        blank=True,
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="AWS: a local or private endpoint for IAM (empty: AWS's public endpoints).",
    )
    include_schemas = ArrayField(
        models.CharField(max_length=255), default=list, blank=True, help_text="Schemas to sync; empty means all."
    )
    default_classification = models.ForeignKey(
        Classification,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Given to newly discovered datasets; the lowest non-public level when empty.",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_sources",
        help_text="Default owner of newly discovered datasets.",
    )
    role_prefix = models.CharField(
        max_length=20,
        default="gov_",
        help_text="Prefix of the roles the portal creates on this source (e.g. gov_u_alice, gov_r_analysts).",
    )
    provisioning_enabled = models.BooleanField(
        default=True, help_text="Apply approved grants to this source (off: grants are recorded only)."
    )
    auto_fix_drift = models.BooleanField(default=False, help_text="Let the scheduled reconciler repair drift.")
    # The portal's own credential on the source (docs/security.md#credential-rotation): rotated every
    # `credential_rotation_days` when the portal holds it (stored encrypted); a referenced secret's
    # age is read from its store and reported. `credential_changed_at`: when it last changed as far
    # as the portal knows (its rotation, a password set through the portal, or the store's own date).
    credential_rotation_days = models.PositiveIntegerField(
        default=30,
        help_text="Rotate the portal's own password on this source every N days (0: never; its age is still shown).",
    )
    credential_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    rotate_secret_ref = models.BooleanField(
        default=False,
        help_text="With an aws-sm: password reference: let the portal write its rotated password into that secret"
        " (it needs secretsmanager:PutSecretValue on it). Off: the secret's age is only reported.",
    )
    last_synced_at = models.DateTimeField(null=True, blank=True)
    last_sync_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<DataSource {self.name}>"

    @property
    def provisions(self) -> bool:
        """Whether the portal itself applies grants on this source (else its team does)."""
        return self.provisioning_enabled and self.kind in (SourceKind.POSTGRESQL, SourceKind.AWS)

    @property
    def has_password(self) -> bool:
        return bool(self.password_encrypted)


class DatasetKind(models.TextChoices):
    TABLE = "table", "Table"
    VIEW = "view", "View"
    MATERIALIZED_VIEW = "materialized_view", "Materialized view"
    PARTITIONED_TABLE = "partitioned_table", "Partitioned table"
    FOREIGN_TABLE = "foreign_table", "Foreign table"
    S3_PREFIX = "s3_prefix", "S3 prefix"


class LineageStatus(models.TextChoices):
    TRACED = "traced", "Every column traced to what it reads"
    PARTIAL = "partial", "Some columns judged by everything the view reads"
    OPAQUE = "opaque", "Not traceable: every column judged by everything the view reads"


class DatasetQuerySet(models.QuerySet["Dataset"]):
    def present(self) -> DatasetQuerySet:
        return self.filter(is_present=True)


@governed()
class Dataset(models.Model):
    """A table, view or prefix that people ask access to.

    Located by (source, schema, name); names are kept exactly as the source spells them, whatever
    characters they hold. Datasets that vanish from the source are flagged, never deleted: grants
    and audit events keep pointing at them.
    """

    source = models.ForeignKey(DataSource, on_delete=models.PROTECT, related_name="datasets")
    schema = models.CharField(max_length=255)
    name = models.CharField(max_length=255)
    kind = models.CharField(max_length=32, choices=DatasetKind.choices, default=DatasetKind.TABLE)
    description = models.TextField(blank=True)
    tags = ArrayField(models.CharField(max_length=50), default=list, blank=True)
    # Two classifications (docs/policy.md, "Policy follows the data"): the one people set, and the one
    # that governs, which is the strictest of that and of everything the dataset reads through views.
    # Everything that decides or shows policy reads `classification`; only `governance.services.lineage`
    # writes it.
    classification = models.ForeignKey(
        Classification,
        on_delete=models.PROTECT,
        related_name="datasets",
        help_text="Effective: the strictest of the declared classification and of everything the dataset reads.",
    )
    declared_classification = models.ForeignKey(
        Classification,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The dataset's own classification, as set by a governance admin (or raised by confirmed PII).",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_datasets",
        help_text="Accountable for the data; approves the owner stage (as do stewards).",
    )
    is_present = models.BooleanField(default=True, help_text="False once the object vanished from the source.")
    aggregates_only = models.BooleanField(
        default=False,
        help_text="Only differentially private aggregates may be requested (privacy/ holds the bounds).",
    )
    # Set when the first row filter is defined (docs/privacy.md "Row filters"): {"force": bool,
    # "confirmed": [readers the owner accepted to lose rows]}. None: no row-level security managed.
    row_security = models.JSONField(null=True, blank=True, editable=False)
    vanished_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    # Views and materialized views: how well the sync could trace what each column reads (catalog/lineage.py).
    lineage_status = models.CharField(max_length=16, choices=LineageStatus.choices, blank=True, default="")
    lineage_notes = models.JSONField(
        default=list, blank=True, help_text="What the sync could not trace, and what the dataset is judged by instead."
    )
    definer_risks = models.JSONField(
        default=list,
        blank=True,
        help_text="SECURITY DEFINER functions that read this dataset: whoever may call one reads what it reads.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DatasetQuerySet.as_manager()

    class Meta:
        ordering = ["source__name", "schema", "name"]
        constraints = [models.UniqueConstraint(fields=["source", "schema", "name"], name="dataset_locator_unique")]
        indexes = [models.Index(fields=["classification", "is_present"], name="dataset_class_present_idx")]
        permissions = [
            ("approve_access", "Can approve access requests for the dataset"),
            ("steward_dataset", "Can confirm column tags and edit the description of the dataset"),
        ]

    def __str__(self) -> str:
        return f"{self.source.name}:{self.qualified_name}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # A new dataset declares what it starts at; lineage may only make the effective one stricter.
        if self.declared_classification_id is None and self.classification_id is not None:
            self.declared_classification_id = self.classification_id
        super().save(*args, **kwargs)

    @property
    def qualified_name(self) -> str:
        """schema.table quoted the way PostgreSQL would print it, for display only (never for SQL)."""

        def quote(ident: str) -> str:
            simple = ident.islower() and ident.replace("_", "").isalnum() and not ident[:1].isdigit()
            return ident if simple else '"' + ident.replace('"', '""') + '"'

        return f"{quote(self.schema)}.{quote(self.name)}"


class DatasetUserObjectPermission(UserObjectPermissionBase):
    """Direct-FK object permissions (guardian): faster than the generic-FK table on large catalogs."""

    content_object = models.ForeignKey(Dataset, on_delete=models.CASCADE)


class DatasetGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(Dataset, on_delete=models.CASCADE)


class Column(models.Model):
    """A column of a dataset. PII/PHI tags live in ColumnTag, suggested or confirmed."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="columns")
    name = models.CharField(max_length=255)
    data_type = models.CharField(max_length=255)
    ordinal = models.PositiveIntegerField()
    is_nullable = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    is_present = models.BooleanField(default=True)
    # Sensitive-data tags a column of a view carries because it computes from tagged columns
    # (maintained by governance.services.lineage; the column's own tags live in ColumnTag).
    inherited_tags = ArrayField(models.CharField(max_length=32), default=list, blank=True)
    inherited_from = models.JSONField(
        default=list, blank=True, help_text='[{"tag": ..., "column": "schema.table.column", "column_id": ...}]'
    )
    lineage_note = models.CharField(
        max_length=300, blank=True, help_text="Set when the column could not be traced exactly, with the reason."
    )
    # When PII discovery last evaluated the column while it had no tag: an untagged column is
    # sampled again only after PII_RESAMPLE_UNTAGGED_SECONDS (governance.catalog.sync_tags).
    pii_evaluated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["dataset", "ordinal"]
        constraints = [models.UniqueConstraint(fields=["dataset", "name"], name="column_name_unique")]

    def __str__(self) -> str:
        return f"{self.dataset.qualified_name}.{self.name}"


class SensitiveTag(models.TextChoices):
    EMAIL = "email", "Email address"
    PHONE = "phone", "Phone number"
    SSN = "ssn", "US social security number"
    NATIONAL_ID = "national_id", "National identifier"
    CARD_NUMBER = "card_number", "Payment card number"
    IBAN = "iban", "IBAN"
    IP_ADDRESS = "ip_address", "IP address"
    DATE_OF_BIRTH = "date_of_birth", "Date of birth"
    PERSON_NAME = "person_name", "Person name"
    ADDRESS = "address", "Postal address"
    PHI = "phi", "Protected health information"


def tag_label(tag: str) -> str:
    """A tag's human label, or the value itself for a tag this version does not know."""
    return SensitiveTag(tag).label if tag in SensitiveTag.values else tag


class TagStatus(models.TextChoices):
    SUGGESTED = "suggested", "Suggested"
    CONFIRMED = "confirmed", "Confirmed"
    REJECTED = "rejected", "Rejected"


# `evaluated_at` moves on every sync that looks at an undecided tag again: a re-look, not a change,
# so the row history records a tag's changes and not every sync.
@governed(exclude=("evaluated_at",))
class ColumnTag(models.Model):
    """A PII/PHI tag on a column. Discovery suggests; a steward confirms or rejects.

    A rejected suggestion is kept so that the next sync does not suggest it again.
    """

    column = models.ForeignKey(Column, on_delete=models.CASCADE, related_name="tags")
    tag = models.CharField(max_length=32, choices=SensitiveTag.choices)
    status = models.CharField(max_length=16, choices=TagStatus.choices, default=TagStatus.SUGGESTED)
    evidence = models.CharField(max_length=255, blank=True, help_text="Why discovery suggested it.")
    confidence = models.FloatField(null=True, blank=True)
    # The structured reasons (`governance.catalog.pii.Finding.as_dict()`): detector, basis, shape,
    # matched/sampled; never a value. Rewritten by every sync while the tag is undecided.
    findings = models.JSONField(default=list, blank=True)
    evaluated_at = models.DateTimeField(null=True, blank=True, help_text="When discovery last looked at the column.")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["column", "tag"]
        constraints = [models.UniqueConstraint(fields=["column", "tag"], name="column_tag_unique")]
        indexes = [models.Index(fields=["status"], name="column_tag_status_idx")]

    def __str__(self) -> str:
        return f"{self.column}: {self.get_tag_display()} ({self.status})"
