"""Re-encrypting stored secrets under the newest key (FIELD_ENCRYPTION_KEYS[0])."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from audit import services as audit

from .. import crypto
from ..models import DataSource, Grant


@dataclass
class RotationResult:
    sources: int = 0
    grants: int = 0


def encryption_keys_rotate(*, actor: Any = None) -> RotationResult:
    """Re-encrypt every data source password and pending temporary login password under the first
    key, in one transaction with its audit event: afterwards the older keys can be removed.

    A secret that no configured key decrypts stops the whole rotation (nothing is half-done) with
    an error that names the row, never the secret."""
    result = RotationResult()
    with transaction.atomic():
        for source in DataSource.objects.select_for_update().exclude(password_encrypted="").order_by("pk"):
            try:
                rotated = crypto.rotate(source.password_encrypted)
            except Exception as exc:
                raise ImproperlyConfigured(
                    f"The password of data source {source.name} cannot be decrypted with any configured key."
                ) from exc
            DataSource.objects.filter(pk=source.pk).update(password_encrypted=rotated)
            result.sources += 1
        for grant in Grant.objects.select_for_update().exclude(jit_password_encrypted="").order_by("pk"):
            try:
                rotated = crypto.rotate(grant.jit_password_encrypted)
            except Exception as exc:
                raise ImproperlyConfigured(
                    f"The temporary login password of grant #{grant.pk} cannot be decrypted with any configured key."
                ) from exc
            Grant.objects.filter(pk=grant.pk).update(jit_password_encrypted=rotated)
            result.grants += 1
        audit.record(
            action="encryption_keys.rotated",
            actor=actor,
            metadata={
                "key": crypto.key_fingerprint(0),
                "sources": result.sources,
                "grants": result.grants,
            },
        )
    return result
