"""Provisioning: how portal principals map to target roles, and the jobs that apply grants."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .catalog import DataSource
from .grants import Grant
from .history import governed
from .roles import Role


@governed()
class SourcePrincipal(models.Model):
    """The PostgreSQL role that stands for a portal user or portal Role on one data source.

    Either an existing login role of the person on that database (`managed=False`, entered by an
    admin: the person keeps logging in as themselves and receives the privileges), or a NOLOGIN role
    the portal creates and owns (`managed=True`, named `<prefix>u_<username>` / `<prefix>r_<slug>`).
    The row keeps the name stable even if the username or the prefix changes later.
    """

    source = models.ForeignKey(DataSource, on_delete=models.PROTECT, related_name="principals")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="source_principals"
    )
    role = models.ForeignKey(Role, null=True, blank=True, on_delete=models.PROTECT, related_name="source_principals")
    db_role = models.CharField(max_length=63, help_text="The role name on the target database.")
    managed = models.BooleanField(default=True, help_text="Created and owned by the portal (NOLOGIN).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(user__isnull=False) & Q(role__isnull=True))
                | (Q(user__isnull=True) & Q(role__isnull=False)),
                name="source_principal_one_subject",
            ),
            models.UniqueConstraint(fields=["source", "user"], name="source_principal_user_unique"),
            models.UniqueConstraint(fields=["source", "role"], name="source_principal_role_unique"),
            models.UniqueConstraint(fields=["source", "db_role"], name="source_principal_name_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.source.name}:{self.db_role}"


class JobAction(models.TextChoices):
    APPLY = "apply", "Apply"
    REVOKE = "revoke", "Revoke"
    # Converge `GRANT role TO member` on one source for one role membership (present while active).
    MEMBERSHIP = "membership", "Role membership"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class ProvisioningJob(models.Model):
    """One attempt-tracked unit of work that makes a target match a grant (apply) or its end (revoke).

    The job row is the durable record; the Celery message only carries its id. A lost message
    (`published_at` too long ago, still queued) or a dead worker (`lease_expires_at` passed, still
    running) is noticed by the sweeper, which publishes the job again (duplicates of a message that
    may only be waiting behind a backlog back off: `republished_at`). A job whose source does not
    answer waits (`waiting_since`, status still queued, no message in the broker) until the prober
    gets an answer and releases it. Failures are kept in `last_error`, never swallowed.
    """

    grant = models.ForeignKey(Grant, null=True, blank=True, on_delete=models.PROTECT, related_name="jobs")
    membership = models.ForeignKey(
        "governance.RoleMembership", null=True, blank=True, on_delete=models.PROTECT, related_name="jobs"
    )
    source = models.ForeignKey(
        DataSource, null=True, blank=True, on_delete=models.PROTECT, related_name="+", help_text="For membership jobs."
    )
    action = models.CharField(max_length=10, choices=JobAction.choices)
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    statements = models.JSONField(default=list, blank=True, help_text="SQL executed, secrets redacted.")
    plan_digest = models.CharField(max_length=64, blank=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True, help_text="Target time of the last attempt.")
    # When the job's current message was sent to the broker (for a retry: when it falls due): the
    # start of its current wait in the queue. The sweeper's duplicates do not move it.
    published_at = models.DateTimeField(default=timezone.now)
    # When the sweeper last sent a duplicate of the message (none since `published_at` if earlier or
    # null). The first duplicate goes PROVISIONING_STUCK_AFTER_SECONDS after `published_at`; each
    # next one waits as long as the job had already waited, plus that, up to
    # PROVISIONING_REPUBLISH_MAX_SECONDS: a lost message is recovered in ~30 s, while a job behind a
    # long legitimate backlog gets a few duplicates (30, 60, 120... s apart), not one every 30 s.
    republished_at = models.DateTimeField(null=True, blank=True)
    # Set at claim and renewed by the running worker's heartbeat (database clock): past it, the
    # worker is presumed dead and the job may be claimed again.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Parked (status queued) because its source does not answer; cleared when the source answers.
    waiting_since = models.DateTimeField(
        null=True, blank=True, help_text="Waiting for its data source to answer again, since then."
    )

    class Meta:
        ordering = ["-queued_at"]
        indexes = [
            models.Index(fields=["status", "queued_at"], name="provisioning_job_status_idx"),
            # The prober's release and the dashboard read the waiting jobs only: a small index.
            models.Index(
                fields=["waiting_since"], name="provisioning_job_waiting_idx", condition=Q(waiting_since__isnull=False)
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(Q(grant__isnull=False) & Q(membership__isnull=True))
                | (Q(grant__isnull=True) & Q(membership__isnull=False) & Q(source__isnull=False)),
                name="provisioning_job_one_subject",
            ),
        ]

    def __str__(self) -> str:
        if self.membership_id:
            return f"Membership #{self.membership_id} on source #{self.source_id} ({self.status})"
        return f"{self.get_action_display()} grant #{self.grant_id} ({self.status})"


class SourceHealth(models.Model):
    """Whether a data source answers the workers, kept apart from DataSource on purpose: DataSource
    has row-history triggers, and a flapping target must not write a history row per flap.

    No row means healthy. A job that cannot reach its source marks it unreachable (audited as
    `source.unreachable`) and parks; the prober (beat, PROVISIONING_PROBE_INTERVAL_SECONDS) probes
    unreachable sources and, when one answers, marks it reachable (`source.recovered`) and
    releases its waiting jobs, revocations first. A successful job also marks its source reachable.
    """

    source = models.OneToOneField(DataSource, primary_key=True, on_delete=models.CASCADE, related_name="health")
    reachable = models.BooleanField(default=True, db_index=True)
    since = models.DateTimeField(default=timezone.now, help_text="When the current state began.")
    last_error = models.TextField(blank=True, help_text="What the last failed job or probe saw.")
    last_failure_at = models.DateTimeField(null=True, blank=True)
    last_probe_at = models.DateTimeField(null=True, blank=True)
    failed_probes = models.PositiveIntegerField(default=0, help_text="Failed probes in the current outage.")
    # The prober claims a source by moving this forward (one UPDATE), so two beat-driven probers
    # never probe the same source at once.
    next_probe_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "data source health"
        verbose_name_plural = "data source health"

    def __str__(self) -> str:
        state = "reachable" if self.reachable else "unreachable"
        return f"{self.source.name}: {state} since {self.since:%Y-%m-%d %H:%M:%S}"
