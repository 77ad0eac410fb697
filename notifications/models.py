"""The outbox: one `Notification` per event, written in the transaction of the event (and its audit
record); one `Delivery` per person and channel, made by the worker after commit and sent once.

Why two tables: the event's transaction (an approval, a provisioning outcome) must stay cheap, so it
writes one row and nothing else; who hears of it (the approvers of a stage, the admins), their
preferences and the rendered message are worked out by the worker (`services/delivery.py`), which
also makes them idempotent (a notification is prepared once, under its row lock). Each delivery
then moves pending → sending (claimed with a lease) → sent, and carries the Message-ID its email is
sent under, so a resend after a worker died between the SMTP server's answer and `sent` is the same
message, recognisable as such by any mail system. docs/notifications.md.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models


class Kind(models.TextChoices):
    REQUEST_WAITING = "request_waiting", "A request waits for your decision"
    REQUEST_DECIDED = "request_decided", "Your request was decided"
    ACCESS_ACTIVE = "access_active", "Your access is active"
    PROVISIONING_FAILED = "provisioning_failed", "Provisioning failed"
    ACCESS_ENDING = "access_ending", "Your access ends soon"
    DRIFT_FOUND = "drift_found", "Drift found on a source you own"
    REVOCATION_OVERDUE = "revocation_overdue", "A revocation is overdue"
    DIGEST = "digest", "Daily digest"


class Channel(models.TextChoices):
    """How a person is told. Slack is the next one: a class in notifications/channels.py and a
    choice here."""

    EMAIL = "email", "Email"


class Notification(models.Model):
    """An event someone should hear about: the outbox row, written with the event."""

    kind = models.CharField(max_length=32, choices=Kind.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    # Who caused it: never told about their own act (None: the system).
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Ids and plain values only (request, grant, job, source ids, a comment): the worker re-reads rows.
    context = models.JSONField(default=dict, blank=True)
    # Events that the scheduler may find twice (an access ending in 7 days, an overdue revocation)
    # carry a key; the unique constraint makes the second one a no-op.
    dedup_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    # Set once its deliveries exist (or it was found to concern nobody).
    prepared_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=300, blank=True, help_text="Why it reached nobody, if it did not.")

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["created_at"], condition=models.Q(prepared_at__isnull=True), name="notif_unprepared_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{Kind(self.kind).label} #{self.pk}"


class DeliveryStatus(models.TextChoices):
    HELD = "held", "Held for the daily digest"
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending (claimed)"
    SENT = "sent", "Sent"
    DIGESTED = "digested", "Sent in a digest"
    FAILED = "failed", "Failed"


class Delivery(models.Model):
    """One message to one person on one channel: the unit that is claimed, sent and marked sent."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="deliveries")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.EMAIL)
    address = models.CharField(max_length=254, blank=True)
    # The Message-ID of the email (<uuid@domain>): the same on every attempt.
    message_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    subject = models.CharField(max_length=300)
    body_text = models.TextField()
    body_html = models.TextField(blank=True)
    link = models.CharField(max_length=500, blank=True, help_text="Where the message sends the person.")
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # A held delivery, once the digest that carried it is made.
    digest = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="items")

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["notification", "recipient", "channel"], name="delivery_once_per_person")
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status__in=["pending", "sending"]),
                name="delivery_due_idx",
            ),
            models.Index(fields=["recipient", "status"], name="delivery_recipient_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.subject} → {self.address or self.recipient_id}"


class Preference(models.Model):
    """A person's choices; no row means email, at once, nothing muted."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="notification_preference"
    )
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.EMAIL)
    digest = models.BooleanField(
        default=False, help_text="Collect what can wait into one email a day instead of one email each."
    )
    muted = ArrayField(models.CharField(max_length=32, choices=Kind.choices), default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Notification preferences of {self.user}"
