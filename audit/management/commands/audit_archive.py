"""`manage.py audit_archive --older-than DAYS --to DIR`: retention for the audit trail.

Sealed events older than DAYS (a verified, contiguous run from the last archive) are written to
DIR/audit-<first>-<last>.jsonl.gz, a signed checkpoint of the last one is recorded, and the rows are
removed. `audit_verify` then starts from that checkpoint. Keep the files (and their SHA-256, printed
and recorded) where your retention policy says; they are the record of those events now.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from audit import chain
from audit.context import cli_context


class Command(BaseCommand):
    help = "Move sealed audit events older than --older-than days to a compressed JSON-lines archive."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=int, required=True, help="Age in days.")
        parser.add_argument("--to", type=Path, required=True, help="Folder for the archive file.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["older_than"] < 1:
            raise CommandError("--older-than must be at least 1 day.")
        cutoff = timezone.now() - dt.timedelta(days=options["older_than"])
        with cli_context("audit_archive"):
            try:
                made = chain.archive(older_than=cutoff, folder=options["to"])
            except (ValueError, OSError) as exc:
                raise CommandError(str(exc)) from None
        if made is None:
            self.stdout.write("nothing to archive")
            return
        self.stdout.write(
            f"archived {made.events} events up to seal {made.upto_seq} to {options['to'] / made.file_name} "
            f"(sha256 {made.sha256})"
        )
