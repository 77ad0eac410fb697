"""Long operations run by a worker (catalog sync, reconcile, bulk actions), with their progress."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from .catalog import DataSource


class OperationKind(models.TextChoices):
    CATALOG_SYNC = "catalog_sync", "Catalog sync"
    RECONCILE = "reconcile", "Reconcile"
    BULK_ACTION = "bulk_action", "Bulk action"


class OperationState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


FINISHED_STATES = (OperationState.SUCCEEDED, OperationState.FAILED)


class Operation(models.Model):
    """One long piece of work started by a person (or the API) and run by a Celery worker.

    Written only by `governance.services.operations`: started (audited) in the transaction of the
    request, its message published on commit; claimed by the worker (`queued` -> `running`); its
    progress (`stage`, `done` of `total`) recorded as the work goes; finished (audited) as
    `succeeded` with a short `summary` and the run's counts in `result`, or `failed` with `error`.
    `heartbeat_at` is renewed by the running worker on the database's clock; the sweeper fails an
    operation whose heartbeat stopped (its worker died), so none stays `running` forever.
    `done`/`total` count the current `stage` (relations sampled, principals compared, repairs made).
    """

    kind = models.CharField(max_length=16, choices=OperationKind.choices)
    state = models.CharField(max_length=12, choices=OperationState.choices, default=OperationState.QUEUED)
    source = models.ForeignKey(DataSource, null=True, blank=True, on_delete=models.PROTECT, related_name="operations")
    params = models.JSONField(default=dict, blank=True, help_text='What was asked, e.g. {"fix": true}.')
    stage = models.CharField(max_length=64, blank=True, help_text="What the worker is doing now.")
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0, help_text="0 while the size of the stage is not known.")
    summary = models.CharField(max_length=1000, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.CharField(max_length=1000, blank=True)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Empty means the system.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "heartbeat_at"], name="operation_state_idx")]

    def __str__(self) -> str:
        where = f" of {self.source.name}" if self.source_id and self.source else ""
        return f"{self.get_kind_display()}{where} #{self.pk}"

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def percent(self) -> int:
        """The bar's fill: the stage's share done, 100 once finished, 0 while the size is unknown."""
        if self.finished:
            return 100
        if not self.total:
            return 0
        return min(100, self.done * 100 // self.total)
