"""`manage.py rewrap_secrets`: move every stored secret under the key that encrypts now, and say
how many moved. With FIELD_ENCRYPTION_KMS_KEY_ID: after the alias moved to a new KMS key; with
FIELD_ENCRYPTION_VAULT_TRANSIT_KEY: after a new version of the Transit key (or, with either, to seal
secrets stored before it was turned on); idempotent, what is already under the current key is left
alone. Without a key service: the same as `rotate_encryption_keys`. Audited (encryption_keys.rotated).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from audit.context import cli_context
from governance.services.keys import encryption_keys_rotate


class Command(BaseCommand):
    help = "Re-wrap every stored secret under the current KMS or Vault Transit key (or the first Fernet key)."

    def handle(self, *args: Any, **options: Any) -> None:
        with cli_context("rewrap_secrets"):
            try:
                result = encryption_keys_rotate(actor=None)
            except ImproperlyConfigured as exc:
                raise CommandError(str(exc)) from None
        self.stdout.write(
            f"under key {result.key}: re-wrapped {result.sources} data source password(s), {result.grants} "
            f"temporary login password(s), {result.webhooks} webhook URL(s), {result.rotations} pending rotation "
            f"password(s); {result.unchanged} already current."
            + "".join(f" {label}: {n}." for label, n in sorted(result.others.items()))
        )
