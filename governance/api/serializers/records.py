"""The audit trail's events and API tokens."""

from __future__ import annotations

from rest_framework import serializers

from accounts.models import ApiToken, TokenScope
from audit.models import AuditEvent

from .shared import UserRefField


class AuditEventSerializer(serializers.ModelSerializer[AuditEvent]):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "occurred_at",
            "actor_username",
            "source",
            "ip_address",
            "user_agent",
            "request_id",
            "action",
            "outcome",
            "target_type",
            "target_id",
            "target_repr",
            "changes",
            "reason",
            "metadata",
        ]


class ApiTokenSerializer(serializers.ModelSerializer[ApiToken]):
    user = UserRefField(read_only=True)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=TokenScope.choices))

    class Meta:
        model = ApiToken
        fields = ["key_id", "name", "user", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at"]
