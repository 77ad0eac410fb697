from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


class Outcome(models.TextChoices):
    SUCCESS = "success", "Success"
    DENIED = "denied", "Denied"
    FAILED = "failed", "Failed"


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise PermissionError("Audit events are append-only.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise PermissionError("Audit events are append-only.")


class AuditEvent(models.Model):
    """One thing that happened: who, what, to what, when, from where, and how it ended.

    Written by services through `audit.record()` in the same transaction as the change it describes,
    so that a change without its event (or an event without its change) cannot be committed.
    Refused attempts are recorded too, with outcome `denied`. Rows are never updated or deleted;
    the actor is kept as a snapshot of the username so that the row still reads right after the
    user is renamed or removed.
    """

    # Set by audit.services.build() (not auto_now_add): the MAC covers it, so it is fixed before saving.
    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        # DO_NOTHING and no database constraint: rows are never touched again, even when a user
        # is removed; the username snapshot keeps the row readable.
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
    )
    actor_username = models.CharField(max_length=150, blank=True)
    source = models.CharField(max_length=16, help_text="web, admin, api, cli, task or system")
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    request_id = models.CharField(max_length=64, db_index=True)
    action = models.CharField(max_length=100, db_index=True, help_text="e.g. access_request.approved")
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.SUCCESS, db_index=True)
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=300, blank=True)
    changes = models.JSONField(default=dict, blank=True, help_text="{field: [before, after]}, secrets redacted")
    reason = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    mac = models.CharField(
        max_length=64,
        blank=True,
        help_text="HMAC-SHA256 of the event's id and fields (audit.chain); empty = not the portal's",
    )

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["target_type", "target_id"], name="audit_target_idx"),
            models.Index(fields=["actor", "-occurred_at"], name="audit_actor_time_idx"),
            models.Index(fields=["actor_username", "-occurred_at"], name="audit_actor_name_time_idx"),
        ]
        # Partitioned by month on occurred_at in the database (audit/partitions.py, migration 0009):
        # its primary key there is (id, occurred_at); ids come from one sequence, so `id` stays unique.

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.actor_username or '-'} {self.action} {self.outcome}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Not `pk is not None`: audit.record() sets the id before the insert (the MAC covers it).
        if not self._state.adding:
            raise PermissionError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise PermissionError("Audit events are append-only.")


class AuditSeal(models.Model):
    """The event with sequence number `seq`, chained to the one before (see audit.chain).

    `event_id` is a plain number, not a foreign key: a deleted event must leave its seal behind,
    pointing at nothing, so that verification can say which one went. Append-only (trigger)."""

    seq = models.BigIntegerField(primary_key=True)
    event_id = models.BigIntegerField(unique=True)
    event_mac = models.CharField(max_length=64)
    chain_mac = models.CharField(max_length=64)
    sealed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"seal {self.seq} of event #{self.event_id}"


class AuditVerification(models.Model):
    """One run of the verification (the periodic task or `manage.py audit_verify`)."""

    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    ok = models.BooleanField(default=False)
    checked = models.BigIntegerField(default=0)
    head_seq = models.BigIntegerField(default=0)
    head_mac = models.CharField(max_length=64, blank=True)
    problems = models.JSONField(default=list, blank=True, help_text="The first problem of each kind.")
    sealed = models.IntegerField(default=0, help_text="Events sealed by this run before verifying.")

    class Meta:
        ordering = ["-started_at"]
        get_latest_by = "started_at"

    def __str__(self) -> str:
        return f"{self.started_at:%Y-%m-%d %H:%M} {'intact' if self.ok else 'TAMPERED'}"


class AuditArchive(models.Model):
    """Events up to `upto_seq` were moved to `file_name` (compressed JSON lines) and removed from the
    database. The row is the checkpoint verification starts from afterwards: the chained MAC of the
    last archived seal, signed with the audit key."""

    upto_seq = models.BigIntegerField(unique=True)
    chain_mac = models.CharField(max_length=64)
    events = models.BigIntegerField()
    file_name = models.CharField(max_length=255)
    location = models.CharField(
        max_length=1024,
        blank=True,
        default="",
        help_text="The exact object version the archive is kept in (s3://bucket/key?versionId=...), read back by "
        "verification; empty for a folder's archive (not read back).",
    )
    sha256 = models.CharField(max_length=64, help_text="Digest of the archive file.")
    signature = models.CharField(max_length=64, help_text="HMAC of upto_seq, chain_mac and sha256.")
    archived_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-upto_seq"]
        get_latest_by = "upto_seq"

    def __str__(self) -> str:
        return f"archive up to seal {self.upto_seq} ({self.file_name})"


class ActorRedactionQuerySet(models.QuerySet["ActorRedaction"]):
    def update(self, **kwargs: Any) -> int:
        raise PermissionError("Redactions are append-only.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise PermissionError("Redactions are append-only.")


class ActorRedaction(models.Model):
    """A person's name is shown as `pseudonym` wherever the trail is displayed (audit.redaction).

    Events are never edited: their MACs and the sealed chain cover the stored rows, which keep the
    username snapshot they were written with. A redaction is the rule that every display of the trail
    (admin, API list and export, SIEM stream from then on) applies: events whose actor is
    `actor_id` show `pseudonym` as their actor, and every word of a displayed text equal to one of
    the redacted values (the usernames the person had, their e-mail address, their names) is shown
    as `pseudonym` too. The values themselves are not stored here: only their keyed digests
    (HMAC-SHA256 under the audit key), so that the redaction does not keep what it hides.
    Append-only (the queryset refuses, and a trigger, migration audit/0011); recorded by the audit
    event `audit.actor_redacted` written with it.
    """

    actor_id = models.BigIntegerField(unique=True, help_text="The events' actor (a plain number, as on the events).")
    pseudonym = models.CharField(max_length=150, unique=True)
    digests = models.JSONField(default=list, help_text="Keyed digests of the redacted values (never the values).")
    reference = models.CharField(max_length=100, help_text="Why: e.g. the data-subject request it carries out.")
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
    )
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = ActorRedactionQuerySet.as_manager()

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"actor shown as {self.pseudonym}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise PermissionError("Redactions are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise PermissionError("Redactions are append-only.")
