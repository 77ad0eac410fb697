"""`manage.py rotate_source_credentials NAME` / `--due`: rotate the portal's own password on a source
now (docs/security.md#credential-rotation), or on every source whose credential is due.

Exit status: 0 when every rotation succeeded; a one-line error and exit 1 (no traceback) for an
unknown source, a source the portal may not rotate, or a failed rotation (the old password still
works; the failure is a finding in the admin).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.context import cli_context
from governance.errors import DomainError
from governance.models import DataSource, RotationStatus
from governance.services.credentials import datasource_credentials_rotate, datasource_credentials_rotate_due


class Command(BaseCommand):
    help = "Rotate the portal's own password on a PostgreSQL source now, or with --due on every source that is due."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", nargs="?", help="Name of the data source.")
        parser.add_argument(
            "--due", action="store_true", help="Every source whose credential is older than its period."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name, due = options.get("source"), options["due"]
        if bool(name) == bool(due):
            raise CommandError("Name one source, or pass --due.")
        with cli_context("rotate_source_credentials"):
            if due:
                counts = datasource_credentials_rotate_due()
                self.stdout.write(
                    f"Rotated {counts['rotated']}, failed {counts['failed']}, skipped {counts['skipped']}."
                )
                if counts["failed"]:
                    raise CommandError(f"{counts['failed']} rotation(s) failed; see the open rotation findings.")
                return
            source = DataSource.objects.filter(name=name).first()
            if source is None:
                raise CommandError(f"No data source named {name!r}.")
            try:
                rotation = datasource_credentials_rotate(source=source)
            except DomainError as exc:
                raise CommandError(exc.message) from None
        if rotation.status != RotationStatus.ROTATED:
            raise CommandError(f"Rotation of {source.name} failed, old password kept: {rotation.error}")
        self.stdout.write(f"Rotated the portal's password on {source.name}.")
