"""Data quality (docs/quality.md): checks defined per dataset, runs on the source, their results and
column profiles. Results and profiles hold counts and fractions; a value of the data is kept only in
the profile of a column with no PII tag and few distinct values (quality.engine.profile)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from governance.models import Dataset

from .engine import checks as kinds


class Kind(models.TextChoices):
    COMPLETENESS = kinds.COMPLETENESS, "Completeness (share of NULLs)"
    UNIQUENESS = kinds.UNIQUENESS, "Uniqueness (share of duplicates)"
    ALLOWED_VALUES = kinds.ALLOWED_VALUES, "Allowed values"
    RANGE = kinds.RANGE, "Range"
    PATTERN = kinds.PATTERN, "Regular expression"
    FRESHNESS = kinds.FRESHNESS, "Freshness (age of the newest timestamp)"
    ROW_COUNT = kinds.ROW_COUNT, "Row count (and its change)"
    REFERENTIAL = kinds.REFERENTIAL, "Referential (values present in another table)"
    CUSTOM_SQL = kinds.CUSTOM_SQL, "Owner-written SQL (failing rows)"


class CheckStatus(models.TextChoices):
    PASS = "pass", "Pass"
    FAIL = "fail", "Fail"
    ERROR = "error", "Error"


class QualityStatus(models.TextChoices):
    UNKNOWN = "unknown", "Not run yet"
    PASSING = "passing", "Passing"
    FAILING = "failing", "Failing"
    ERROR = "error", "Error"


class Trigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "On demand"


class QualityCheck(models.Model):
    """One rule about a dataset. ``threshold`` bounds the measured value: at most this share of failing
    rows (row checks), at most this age in seconds (freshness), at most this many rows (owner-written
    SQL), at least this many rows (row count)."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="quality_checks")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    column = models.CharField(max_length=255, blank=True)
    params = models.JSONField(default=dict, blank=True)
    threshold = models.FloatField(default=0.0)
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Owner-written SQL runs only once someone other than its author reviewed it.",
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The last result, kept here for lists and badges (one read per dataset, not per run).
    last_status = models.CharField(max_length=8, choices=CheckStatus.choices, blank=True)
    last_value = models.FloatField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["dataset", "name"]
        constraints = [models.UniqueConstraint(fields=["dataset", "name"], name="quality_check_name_unique")]

    def __str__(self) -> str:
        return f"{self.dataset} · {self.name}"

    @property
    def at_least(self) -> bool:
        return self.kind == Kind.ROW_COUNT

    @property
    def awaiting_review(self) -> bool:
        return self.kind == Kind.CUSTOM_SQL and self.reviewed_at is None


class DatasetQuality(models.Model):
    """A dataset's quality state and schedule: what the catalog filters and badges read."""

    dataset = models.OneToOneField(Dataset, primary_key=True, on_delete=models.CASCADE, related_name="quality")
    status = models.CharField(max_length=8, choices=QualityStatus.choices, default=QualityStatus.UNKNOWN, db_index=True)
    failing_checks = models.PositiveIntegerField(default=0)
    interval_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="Between scheduled runs; empty: QUALITY_DEFAULT_INTERVAL_MINUTES, 0: never."
    )
    next_run_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    running_since = models.DateTimeField(null=True, blank=True, help_text="A run's lease (a dead worker's expires).")

    def __str__(self) -> str:
        return f"{self.dataset}: {self.status}"


class QualityRun(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="quality_runs")
    trigger = models.CharField(max_length=8, choices=Trigger.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    duration_ms = models.FloatField()
    status = models.CharField(max_length=8, choices=QualityStatus.choices)
    estimated_rows = models.BigIntegerField(null=True, blank=True)
    sample_percent = models.FloatField(null=True, blank=True, help_text="Set when fraction checks read a sample.")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["dataset", "-started_at"], name="quality_run_dataset_time")]

    def __str__(self) -> str:
        return f"Run #{self.pk} of {self.dataset}: {self.status}"


class QualityResult(models.Model):
    run = models.ForeignKey(QualityRun, on_delete=models.CASCADE, related_name="results")
    check_ref = models.ForeignKey(QualityCheck, on_delete=models.CASCADE, related_name="results")
    status = models.CharField(max_length=8, choices=CheckStatus.choices)
    value = models.FloatField(null=True, blank=True)
    threshold = models.FloatField()
    failing = models.BigIntegerField(null=True, blank=True)
    examined = models.BigIntegerField(null=True, blank=True)
    message = models.CharField(max_length=400, blank=True)

    class Meta:
        ordering = ["run", "check_ref__name"]
        indexes = [models.Index(fields=["check_ref", "-run"], name="quality_result_check_run")]

    def __str__(self) -> str:
        return f"{self.check_ref.name}: {self.status}"


class ColumnProfile(models.Model):
    run = models.ForeignKey(QualityRun, on_delete=models.CASCADE, related_name="profiles")
    column = models.CharField(max_length=255)
    rows = models.BigIntegerField()
    nulls = models.BigIntegerField()
    distinct = models.BigIntegerField()
    minimum = models.TextField(null=True, blank=True)
    maximum = models.TextField(null=True, blank=True)
    top_values = models.JSONField(default=list, blank=True)
    values_withheld = models.BooleanField(default=True, help_text="PII (or possibly): counts only, no value.")

    class Meta:
        ordering = ["run", "column"]

    def __str__(self) -> str:
        return f"Profile of {self.column} (run #{self.run_id})"


class IntegrityMode(models.TextChoices):
    IMMUTABLE = "immutable", "Immutable (no row may change, appear or go)"
    APPEND_ONLY = "append_only", "Append-only (rows are only added, with a growing key)"


class IntegrityWatch(models.Model):
    """A dataset whose rows must not change behind anyone's back: each quality run fingerprints it
    (quality.engine.integrity) and compares with the last snapshot."""

    dataset = models.OneToOneField(Dataset, primary_key=True, on_delete=models.CASCADE, related_name="integrity_watch")
    mode = models.CharField(max_length=12, choices=IntegrityMode.choices)
    key_column = models.CharField(
        max_length=255, blank=True, help_text="Append-only: the column whose values only grow."
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.dataset}: {self.get_mode_display()}"


class IntegritySnapshot(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="integrity_snapshots")
    run = models.OneToOneField(QualityRun, on_delete=models.CASCADE, related_name="integrity_snapshot")
    taken_at = models.DateTimeField()
    rows = models.BigIntegerField()
    checksum = models.CharField(max_length=40, help_text="Sum of the rows' 64-bit hashes (numeric, as text).")
    watermark = models.TextField(null=True, blank=True, help_text="Append-only: the highest key.")
    # S3 prefixes: the objects' keys, ETags and sizes (kept on the latest snapshot only) and the
    # bucket's protections as read (quality.engine.s3_integrity).
    manifest = models.JSONField(null=True, blank=True)
    protections = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-taken_at", "-id"]

    def __str__(self) -> str:
        return f"Snapshot of {self.dataset} at {self.taken_at:%Y-%m-%d %H:%M}"


class IntegrityFinding(models.Model):
    """A change a watched dataset should not have had: open until someone accepts it (the snapshot it
    was found in becomes the new baseline either way)."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="integrity_findings")
    snapshot = models.ForeignKey(IntegritySnapshot, on_delete=models.CASCADE, related_name="findings")
    detail = models.TextField()
    found_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolution = models.TextField(blank=True)

    class Meta:
        ordering = ["-found_at", "-id"]

    def __str__(self) -> str:
        return f"{self.dataset}: {self.detail[:60]}"
