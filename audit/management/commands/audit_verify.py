"""`manage.py audit_verify [--since SEQ] [--checkpoint FILE]`: is the audit trail intact?

Seals what is pending first (an event written behind the portal is refused and reported), then
walks the chain. Exit 0 when intact; 1 with one line per kind of tampering, naming the first broken
event of each; 2 for bad input (an unreadable or forged checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import chain


class Command(BaseCommand):
    help = "Verify the audit trail's MACs and chain; exit 1 naming the first broken event of each kind."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", type=int, default=1, help="Start at this seal sequence number.")
        parser.add_argument(
            "--checkpoint",
            type=Path,
            help="A file written by audit_checkpoint: start after it, from its signed MAC.",
        )
        parser.add_argument("--no-seal", action="store_true", help="Do not seal pending events first.")

    def handle(self, *args: Any, **options: Any) -> None:
        since, start_mac = options["since"], None
        if since < 1:
            raise CommandError("--since must be 1 or more.")
        if options["checkpoint"]:
            try:
                doc = json.loads(options["checkpoint"].read_text())
            except (OSError, ValueError) as exc:
                raise CommandError(f"Cannot read the checkpoint: {exc}") from None
            if not isinstance(doc, dict) or not chain.checkpoint_valid(doc):
                raise CommandError("The checkpoint's signature does not match: it was not made with this key.")
            since, start_mac = int(doc["seq"]) + 1, str(doc["chain_mac"])
        _, result, sealed = chain.verify_and_record(since=since, start_mac=start_mac, seal_first=not options["no_seal"])
        if result.ok:
            self.stdout.write(
                f"audit trail intact: {result.checked} sealed events checked, head {result.head_seq} "
                f"({sealed.sealed} newly sealed)"
            )
            return
        for problem in result.first_by_kind():
            self.stderr.write(f"{problem.kind}: {problem.message}")
        raise SystemExit(1)
