"""Data-subject requests (GDPR Art. 15/16/17/18/20) across the governed PostgreSQL datasets.

- SubjectIdentifier: a column that identifies a data subject (suggested, then decided by a steward).
- Relationship: dataset.columns -> referenced dataset.columns (a foreign key read from the source,
  or declared by the dataset's owner): how rows of one table belong to a subject found in another.
- DatasetHandling: what the dataset's owner says a request does to it (erase, anonymise, retain).
- SubjectRequest: one request, its identifiers (encrypted: they are personal data), deadline and
  state; RequestDataset: per dataset, what the preview found and what execution did (counts only);
  SubjectExport: an access request's ZIP, encrypted at rest, downloadable once, then deleted.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from governance.models import Column, Dataset, TagStatus


class IdentifierKind(models.TextChoices):
    EMAIL = "email", "Email address"
    CUSTOMER_ID = "customer_id", "Customer id"
    USER_ID = "user_id", "User id"
    NATIONAL_ID = "national_id", "National identifier"
    PHONE = "phone", "Phone number"


class SubjectIdentifier(models.Model):
    """A column whose values identify data subjects. Suggested by the portal; a steward confirms."""

    column = models.ForeignKey(Column, on_delete=models.CASCADE, related_name="subject_identifiers")
    kind = models.CharField(max_length=16, choices=IdentifierKind.choices)
    status = models.CharField(max_length=16, choices=TagStatus.choices, default=TagStatus.SUGGESTED)
    evidence = models.CharField(max_length=255, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["column", "kind"]
        constraints = [models.UniqueConstraint(fields=["column", "kind"], name="subject_identifier_unique")]

    def __str__(self) -> str:
        return f"{self.column}: {self.get_kind_display()} ({self.status})"


class RelationshipOrigin(models.TextChoices):
    FOREIGN_KEY = "foreign_key", "Foreign key on the source"
    DECLARED = "declared", "Declared by the owner"


class Relationship(models.Model):
    """Rows of `dataset` whose `columns` equal `referenced_columns` of a row of `referenced` belong
    to the same subject. Both datasets are on one source (a condition is one SQL statement)."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="subject_links")
    columns = ArrayField(models.CharField(max_length=255))
    referenced = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="subject_links_in")
    referenced_columns = ArrayField(models.CharField(max_length=255))
    origin = models.CharField(max_length=16, choices=RelationshipOrigin.choices)
    constraint_name = models.CharField(max_length=255, blank=True)
    declared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    seen_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "columns", "referenced", "referenced_columns"], name="subject_relationship_unique"
            )
        ]

    def __str__(self) -> str:
        return (
            f"{self.dataset.name}.{','.join(self.columns)} → {self.referenced.name}.{','.join(self.referenced_columns)}"
        )


class HandlingAction(models.TextChoices):
    ERASE = "erase", "Erase (delete the rows)"
    ANONYMISE = "anonymise", "Anonymise (set PII columns to NULL)"
    RETAIN = "retain", "Retain (legal basis)"


class LegalBasis(models.TextChoices):
    LEGAL_HOLD = "legal_hold", "Legal hold"
    STATUTORY_RETENTION = "statutory_retention", "Statutory retention"


class DatasetHandling(models.Model):
    """What an erasure does to a dataset, set by its owner. None set: erase."""

    dataset = models.OneToOneField(Dataset, on_delete=models.CASCADE, related_name="subject_handling")
    action = models.CharField(max_length=16, choices=HandlingAction.choices, default=HandlingAction.ERASE)
    legal_basis = models.CharField(max_length=32, choices=LegalBasis.choices, blank=True)
    reason = models.TextField(blank=True)
    set_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    set_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.dataset}: {self.action}"


class RequestKind(models.TextChoices):
    ACCESS = "access", "Access / portability (Art. 15, 20)"
    RECTIFICATION = "rectification", "Rectification (Art. 16)"
    ERASURE = "erasure", "Erasure (Art. 17)"
    RESTRICTION = "restriction", "Restriction (Art. 18)"


class RequestAction(models.TextChoices):
    """What a request does to one dataset: the dataset's handling (erasure, access), or the kind's own
    action (rectification: rectify; restriction: restrict); a retained dataset stays retained."""

    ERASE = "erase", "Erase (delete the rows)"
    ANONYMISE = "anonymise", "Anonymise (set PII columns to NULL)"
    RETAIN = "retain", "Retain (legal basis)"
    RECTIFY = "rectify", "Rectify (set the corrected values)"
    RESTRICT = "restrict", "Restrict (owner notified, acknowledgement tracked)"


class RequestState(models.TextChoices):
    DRAFT = "draft", "Draft"
    PREVIEWED = "previewed", "Previewed"
    APPROVED = "approved", "Approved"
    EXECUTING = "executing", "Executing"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    NEEDS_ATTENTION = "needs_attention", "Needs attention"


class SubjectRequest(models.Model):
    """A data subject's request. The identifiers' values are stored only encrypted and never shown
    in lists, audit events or __str__; `identifier_kinds` says which kinds were given."""

    kind = models.CharField(max_length=16, choices=RequestKind.choices)
    state = models.CharField(max_length=16, choices=RequestState.choices, default=RequestState.DRAFT)
    identifiers_encrypted = models.TextField(editable=False)
    identifier_kinds = ArrayField(models.CharField(max_length=16), default=list)
    reference = models.CharField(max_length=100, blank=True, help_text="The officer's case reference (no PII).")
    self_service = models.BooleanField(
        default=False, help_text="Filed by the subject through the portal's self-service form (SUBJECTS_SELF_SERVICE)."
    )
    message_encrypted = models.TextField(
        blank=True, editable=False, help_text="The subject's optional message (self-service), encrypted."
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    due_at = models.DateTimeField()
    extended_at = models.DateTimeField(null=True, blank=True)
    extension_reason = models.TextField(blank=True)
    previewed_at = models.DateTimeField(null=True, blank=True)
    previewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    executed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    executing_since = models.DateTimeField(
        null=True, blank=True, help_text="When the current execution was claimed (the stuck-execution lease)."
    )
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    export_downloaded_at = models.DateTimeField(null=True, blank=True)
    # A rectification's corrections: [{"dataset", "column", "value"}], personal data, so encrypted like
    # the identifiers; `correction_columns` says which columns of which datasets, never the values.
    corrections_encrypted = models.TextField(blank=True, editable=False)
    correction_columns = models.JSONField(default=list, blank=True)
    corrections_set_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    corrections_set_at = models.DateTimeField(null=True, blank=True)
    # What was approved (kind, identifiers, corrections, the preview's datasets), as a keyed digest:
    # execution refuses a request whose content changed since its approval.
    approved_digest = models.CharField(max_length=64, blank=True, editable=False)

    class Meta:
        ordering = ["due_at", "pk"]
        indexes = [models.Index(fields=["state", "due_at"], name="subject_request_due_idx")]

    def __str__(self) -> str:
        return f"Subject request #{self.pk} ({self.kind})"

    @property
    def closed(self) -> bool:
        return self.state in (RequestState.DONE,)

    def overdue(self, now: dt.datetime | None = None) -> bool:
        return not self.closed and self.due_at < (now or timezone.now())


class DatasetOutcome(models.TextChoices):
    PENDING = "pending", "Pending"
    DONE = "done", "Done"
    SKIPPED = "skipped", "Skipped"
    NEEDS_ATTENTION = "needs_attention", "Needs attention"
    FAILED = "failed", "Failed"
    NOTIFIED = "notified", "Owner notified, awaiting acknowledgement"


class RequestDataset(models.Model):
    """One dataset of a request: what the preview matched and how, and what execution did."""

    request = models.ForeignKey(SubjectRequest, on_delete=models.CASCADE, related_name="datasets")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="+")
    matched = models.PositiveIntegerField(null=True, blank=True)
    paths = models.JSONField(default=list, help_text="How rows match: direct on a column, or via relationships.")
    action = models.CharField(max_length=16, choices=RequestAction.choices)
    legal_basis = models.CharField(max_length=32, choices=LegalBasis.choices, blank=True)
    reason = models.TextField(blank=True)
    error = models.TextField(blank=True)
    outcome = models.CharField(max_length=16, choices=DatasetOutcome.choices, default=DatasetOutcome.PENDING)
    rows_affected = models.PositiveIntegerField(null=True, blank=True)
    verified = models.BooleanField(null=True, blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)
    # A restriction: the dataset's owner or steward says the subject's rows are restricted.
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["request", "pk"]
        constraints = [models.UniqueConstraint(fields=["request", "dataset"], name="request_dataset_unique")]

    def __str__(self) -> str:
        return f"{self.request} on {self.dataset}"


class SubjectExport(models.Model):
    """An access request's ZIP (JSON and CSV per dataset), Fernet-encrypted; deleted once downloaded
    or when it expires."""

    request = models.OneToOneField(SubjectRequest, on_delete=models.CASCADE, related_name="export")
    payload_encrypted = models.TextField(editable=False)
    size = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"Export of {self.request}"
