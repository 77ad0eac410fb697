"""Re-encrypting stored secrets under the current key: the first of FIELD_ENCRYPTION_KEYS, or, with
FIELD_ENCRYPTION_KMS_KEY_ID, the KMS key that id or alias names now, or, with
FIELD_ENCRYPTION_VAULT_TRANSIT_KEY, the Transit key's latest version (governance.crypto)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from audit import services as audit

from .. import crypto
from ..selectors.keys import all_stored_secrets


@dataclass
class RotationResult:
    key: str = ""
    sources: int = 0  # secrets re-encrypted or re-wrapped, per kind
    grants: int = 0
    webhooks: int = 0
    rotations: int = 0  # pending new passwords of credential rotations
    pseudonym_keys: int = 0  # the sources' pseudonym keys (governed views)
    unchanged: int = 0  # already under the current key (KMS only: MultiFernet always re-encrypts)
    # The secrets other apps registered (governance.selectors.keys.stored_secret_register), per counter.
    others: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return (
            self.sources
            + self.grants
            + self.webhooks
            + self.rotations
            + self.pseudonym_keys
            + sum(self.others.values())
        )


def encryption_keys_rotate(*, actor: Any = None, record_unchanged: bool = True) -> RotationResult:
    """Move every stored secret under the current key, in one transaction with its audit event:
    afterwards the older keys (Fernet keys, or the previous KMS key) can be retired.

    With a key service this is idempotent: an envelope already wrapped by the current key is left as
    it is, a MultiFernet token is sealed into an envelope, an envelope of an older key (or Transit key
    version) has its data key re-wrapped inside the service (KMS ReEncrypt, Transit rewrap).
    `record_unchanged=False` (the beat task) records no event when nothing changed. A secret that
    cannot be decrypted stops the whole run (nothing is half-done) with an error that names the
    row, never the secret."""
    result = RotationResult(key=crypto.current_key())
    with transaction.atomic():
        for model, column, counter, label in all_stored_secrets():
            manager = model._default_manager
            for row in manager.select_for_update().exclude(**{column: ""}).order_by("pk"):
                token = getattr(row, column)
                try:
                    rotated = crypto.rotate(token, current=result.key)
                except ImproperlyConfigured as exc:
                    raise ImproperlyConfigured(f"{label.format(row=row).capitalize()}: {exc}") from exc
                if rotated == token:
                    result.unchanged += 1
                    continue
                manager.filter(pk=row.pk).update(**{column: rotated})
                if counter in RotationResult.__dataclass_fields__:
                    setattr(result, counter, getattr(result, counter) + 1)
                else:
                    result.others[counter] = result.others.get(counter, 0) + 1
        if result.changed or record_unchanged:
            audit.record(
                action="encryption_keys.rotated",
                actor=actor,
                metadata={
                    "key": result.key,
                    "sources": result.sources,
                    "grants": result.grants,
                    "webhooks": result.webhooks,
                    "rotations": result.rotations,
                    "pseudonym_keys": result.pseudonym_keys,
                    "unchanged": result.unchanged,
                    **result.others,
                },
            )
    return result
