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
    ROTATION_FAILED = "rotation_failed", "A rotation of the portal's credential failed"
    REVIEW_ASSIGNED = "review_assigned", "Access waits for your review"
    REVIEW_DUE = "review_due", "An access review's deadline is near"
    REVIEW_OVERDUE = "review_overdue", "An access review is overdue"
    QUALITY_FAILING = "quality_failing", "Quality checks started failing on a dataset you own"
    INTEGRITY_CHANGED = "integrity_changed", "A dataset that must not change was changed"
    BREAK_GLASS_ACTIVATED = "break_glass_activated", "Someone broke the glass (emergency access)"
    BREAK_GLASS_REVIEW_OVERDUE = "break_glass_review_overdue", "A break-glass review is overdue"
    SUBJECT_REQUEST_DUE = "subject_request_due", "A data-subject request is due within 7 days"
    SUBJECT_REQUEST_OVERDUE = "subject_request_overdue", "A data-subject request is overdue"
    DIGEST = "digest", "Daily digest"


# Kinds everyone concerned hears at once on every channel they can be reached on, whatever their
# preferences (not muted, not held for a digest): the break-glass alarms (docs/break-glass.md).
LOUD = frozenset({Kind.BREAK_GLASS_ACTIVATED, Kind.BREAK_GLASS_REVIEW_OVERDUE})


class Channel(models.TextChoices):
    """How a person is told: a class in notifications/channels.py (email) or slack.py per choice."""

    EMAIL = "email", "Email"
    SLACK = "slack", "Slack"


# What a person may choose per kind on the preferences page: one channel, or both.
ROUTES = {
    "email": [Channel.EMAIL.value],
    "slack": [Channel.SLACK.value],
    "both": [Channel.EMAIL.value, Channel.SLACK.value],
}


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
    # Slack: the Block Kit message (text fallback + blocks), made when the delivery is prepared.
    payload = models.JSONField(default=dict, blank=True)
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
    """A person's choices; no row means email, at once, nothing muted. `channel` is the channel of
    every kind that `routes` does not name; `routes` maps a kind to "email", "slack" or "both"."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="notification_preference"
    )
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.EMAIL)
    digest = models.BooleanField(
        default=False, help_text="Collect what can wait into one email a day instead of one email each."
    )
    muted = ArrayField(models.CharField(max_length=32, choices=Kind.choices), default=list, blank=True)
    routes = models.JSONField(default=dict, blank=True, help_text='Kind -> "email", "slack" or "both".')
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Notification preferences of {self.user}"

    def route(self, kind: str) -> str:
        """ "email", "slack" or "both" for this kind."""
        route = self.routes.get(kind) if isinstance(self.routes, dict) else None
        return route if route in ROUTES else self.channel

    def channels_for(self, kind: str) -> list[str]:
        return list(ROUTES[self.route(kind)])


class SlackWebhook(models.Model):
    """A Slack incoming webhook of a team's channel: where a team member who has not linked their
    Slack account is told, when they chose Slack. The URL is a secret (whoever has it posts to the
    channel): stored encrypted (governance.crypto, FIELD_ENCRYPTION_KEYS), never shown again."""

    team = models.OneToOneField("accounts.Team", on_delete=models.CASCADE, related_name="slack_webhook")
    channel = models.CharField(max_length=80, help_text="The channel the webhook posts to, e.g. #finance-data.")
    url_encrypted = models.TextField(editable=False)
    is_active = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.channel} ({self.team})"


class SlackLink(models.Model):
    """Which Slack user a portal user is, proven once: the signed-in portal page issues a one-time
    code (only its hash is kept), the person sends it from Slack with the slash command, and Slack's
    signed request names the Slack user who sent it. docs/notifications.md#linking."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="slack_link"
    )
    slack_user_id = models.CharField(max_length=32, null=True, blank=True, unique=True)
    slack_team_id = models.CharField(max_length=32, blank=True)
    linked_at = models.DateTimeField(null=True, blank=True)
    code_hash = models.CharField(max_length=64, blank=True)
    code_expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user} = Slack {self.slack_user_id or '(not linked)'}"


class ChatDecisionToken(models.Model):
    """The nonce behind a Slack message's Approve / Deny buttons: one per message, for one approver
    and one stage of one request. The buttons carry it signed (django.core.signing); a press
    consumes it (`used_at`) in the transaction of the decision, so a replay or a second press of
    either button decides nothing."""

    nonce = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    request = models.ForeignKey("governance.AccessRequest", on_delete=models.CASCADE, related_name="+")
    stage = models.CharField(max_length=32)
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    used_at = models.DateTimeField(null=True, blank=True)
    used_for = models.CharField(max_length=16, blank=True)

    def __str__(self) -> str:
        return f"Chat decision on request #{self.request_id} for {self.approver_id}"
