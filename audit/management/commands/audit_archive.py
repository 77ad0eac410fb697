"""`manage.py audit_archive --older-than DAYS [--to DIR]`: retention for the audit trail.

Sealed events older than DAYS (a verified, contiguous run from the last archive) are written to
audit-<first>-<last>.jsonl.gz with its signed checkpoint beside it (<name>.checkpoint.json), a signed
checkpoint of the last one is recorded (AuditArchive), and the rows are removed. `audit_verify` then
starts from that checkpoint.

- `--to DIR`: a folder. Keep the files (and their SHA-256, printed and recorded) where your retention
  policy says; they are the record of those events now, and verification does not read them back.
- without `--to`: the S3 bucket with Object Lock of AUDIT_ARCHIVE_S3_BUCKET (COMPLIANCE mode for
  AUDIT_ARCHIVE_S3_RETENTION_DAYS, SSE-KMS under AUDIT_ARCHIVE_S3_KMS_KEY_ID). The exact object version
  is recorded; `audit_verify` reads it back and walks its chain (docs/security.md#audit).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from audit import chain
from audit.chain.archive_store import ArchiveStoreError
from audit.context import cli_context


class Command(BaseCommand):
    help = "Move sealed audit events older than --older-than days to a compressed JSON-lines archive."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=int, required=True, help="Age in days.")
        parser.add_argument(
            "--to",
            type=Path,
            help="Folder for the archive file. Without it: the S3 bucket with Object Lock (AUDIT_ARCHIVE_S3_BUCKET).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["older_than"] < 1:
            raise CommandError("--older-than must be at least 1 day.")
        cutoff = timezone.now() - dt.timedelta(days=options["older_than"])
        with cli_context("audit_archive"):
            try:
                made = chain.archive(older_than=cutoff, folder=options["to"])
            except (ValueError, OSError, ArchiveStoreError) as exc:
                raise CommandError(str(exc)) from None
        if made is None:
            self.stdout.write("nothing to archive")
            return
        where = options["to"] / made.file_name if options["to"] is not None else made.location
        self.stdout.write(f"archived {made.events} events up to seal {made.upto_seq} to {where} (sha256 {made.sha256})")
