"""Idempotency records of the REST API (see `governance.api.idempotency`)."""

from __future__ import annotations

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models


class IdempotencyRecord(models.Model):
    """The response given to a write that carried an ``Idempotency-Key`` header, kept so that a
    retry of the same call (a pipeline that timed out, a bot that restarted) gets the same answer
    instead of doing it twice. Keys are per user; a key reused with a different method, path or body
    is refused. Records older than IDEMPOTENCY_TTL_HOURS are purged by beat and no longer replay."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of method, path and body.")
    status_code = models.PositiveSmallIntegerField()
    body = models.JSONField(encoder=DjangoJSONEncoder, null=True)
    location = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_user_key_unique")]

    def __str__(self) -> str:
        return f"{self.key} ({self.status_code})"
