"""`manage.py audit_verify [--checkpoint FILE] [--no-seal] [--no-archives]`: is the audit trail intact and complete?

Seals what is pending first (an event written behind the portal is refused and reported), reads the
newest anchor of every configured witness (AUDIT_ANCHOR_FILE, AUDIT_ANCHOR_S3_BUCKET), then walks the
whole trail, from genesis or the last archive's signed checkpoint, and checks it against the
anchors: each anchored seal must be there with the anchored chained MAC (so nothing before it
changed) and the head must not be below it. `--checkpoint FILE` (from `audit_checkpoint`, or an
anchor copied out of a witness) is one more anchor to check against; it never shortens the walk.
Every archive kept in S3 (`audit_archive` without `--to`) is read back first, the exact object version
its checkpoint recorded, and its events and chain checked up to that checkpoint (`--no-archives`
skips that; archives in a folder are never read back).

Exit status:
  0  intact: every sealed event matches its MAC, the chain is unbroken, every anchor holds;
  1  not proved intact: one line per kind of problem, naming the first broken event or seal of
     each (`modified`, `deleted`, `forged`, `reordered`, `chain_broken`, `gap`, `archived`,
     `unsealed`, `anchor`), `archive` when an archive read back is missing, changed, not locked or
     broken, or `witness` when a configured witness cannot be read (fail closed);
  2  bad input: an unreadable checkpoint file, or one not signed with the audit key.

There is no `--since` any more: starting the walk part-way trusted the database for everything
before, which is exactly what verification must not do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import anchors, chain


class Command(BaseCommand):
    help = "Verify the whole audit trail against its MACs, its chain and its anchors; exit 1 naming what is wrong."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--checkpoint",
            type=Path,
            help="A signed head (audit_checkpoint's output, or an anchor): also check the trail against it.",
        )
        parser.add_argument("--no-seal", action="store_true", help="Do not seal pending events first.")
        parser.add_argument("--no-archives", action="store_true", help="Do not read back the archives kept in S3.")

    def handle(self, *args: Any, **options: Any) -> None:
        checkpoint = None
        if options["checkpoint"]:
            path = options["checkpoint"]
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise CommandError(f"Cannot read the checkpoint: {exc}") from None
            checkpoint = anchors.parse(doc, where=f"checkpoint {path.name}")
            if checkpoint is None:
                raise CommandError("The checkpoint's signature does not match: it was not made with this key.")
        _, result, sealed = chain.verify_and_record(
            checkpoint=checkpoint, seal_first=not options["no_seal"], archives=not options["no_archives"]
        )
        if result.ok:
            start = f"from the archive checkpoint of seal {result.start_seq}" if result.start_seq else "from genesis"
            self.stdout.write(
                f"audit trail intact: {result.checked} sealed events checked {start}, head {result.head_seq} "
                f"({sealed.sealed} newly sealed), {result.anchors} anchor(s) hold"
            )
            if result.archives_read:
                self.stdout.write(
                    f"{result.archives_read} archive(s) read back: {result.archived_checked} archived events "
                    "checked up to their signed checkpoints"
                )
            if not result.anchors:
                self.stdout.write(
                    "no anchor was checked: without a witness outside the database (AUDIT_ANCHOR_FILE, "
                    "AUDIT_ANCHOR_S3_BUCKET) the newest events can be removed without a trace"
                )
            return
        for problem in result.first_by_kind():
            self.stderr.write(f"{problem.kind}: {problem.message}")
        raise SystemExit(1)
