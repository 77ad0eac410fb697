"""`manage.py audit_checkpoint`: print a signed checkpoint of the audit chain's head (JSON).

The same document the anchor witnesses hold (`{v, seq, chain_mac, at, signature}`). Keep it outside
the database (a ticket, a write-once bucket, an e-mail to the auditors): later,
`audit_verify --checkpoint FILE` checks the whole trail against it as well as against the
witnesses. Verifies the trail first (against the witnesses too) and refuses to sign a broken one.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit import anchors, chain


class Command(BaseCommand):
    help = "Print a signed checkpoint (head sequence and chained MAC) of an intact audit trail."

    def handle(self, *args: Any, **options: Any) -> None:
        chain.seal_pending(full=True)
        found, errors = anchors.read_latest()
        result = chain.verify(anchors=found)
        if not result.ok or errors:
            raise CommandError("The audit trail is not intact; run audit_verify. No checkpoint was signed.")
        self.stdout.write(json.dumps(chain.checkpoint(result), indent=2))
