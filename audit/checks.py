"""`manage.py check --deploy`: a production trail needs a witness of its head outside the database."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.security, deploy=True)
def anchor_witness_configured(app_configs: Any, **kwargs: Any) -> list[Any]:
    found: list[Any] = []
    if not settings.AUDIT_ANCHOR_FILE and not settings.AUDIT_ANCHOR_S3_BUCKET:
        found.append(
            Warning(
                "No witness of the audit chain's head is configured: a database superuser can remove the newest "
                "audit events (or all of them) without verification noticing.",
                hint="Set AUDIT_ANCHOR_S3_BUCKET (a bucket with Object Lock in COMPLIANCE mode) and/or "
                "AUDIT_ANCHOR_FILE (an append-only file the database's administrators cannot write); "
                "see docs/operations.md.",
                id="audit.W001",
            )
        )
    if settings.AUDIT_ANCHOR_S3_RETENTION_DAYS < 0:
        found.append(Error("AUDIT_ANCHOR_S3_RETENTION_DAYS must be 0 or more.", id="audit.E001"))
    return found
