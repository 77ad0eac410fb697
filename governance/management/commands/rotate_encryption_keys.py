"""`manage.py rotate_encryption_keys`: re-encrypt every stored credential under the first key of
FIELD_ENCRYPTION_KEYS, so that the older keys can be removed afterwards. Audited.

Rotation: generate a key (`generate_encryption_key`), put it first in FIELD_ENCRYPTION_KEYS
(keep the old ones after it), restart, run this command, then drop the old keys and restart again.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from audit.context import cli_context
from governance.services.keys import encryption_keys_rotate


class Command(BaseCommand):
    help = "Re-encrypt every stored credential under the first key of FIELD_ENCRYPTION_KEYS."

    def handle(self, *args: Any, **options: Any) -> None:
        with cli_context("rotate_encryption_keys"):
            try:
                result = encryption_keys_rotate(actor=None)
            except ImproperlyConfigured as exc:
                raise CommandError(str(exc)) from None
        self.stdout.write(
            f"re-encrypted under key {result.key}: {result.sources} data source password(s), "
            f"{result.grants} temporary login password(s), {result.webhooks} webhook URL(s), "
            f"{result.rotations} pending rotation password(s). "
            "The older keys can now be removed."
        )
