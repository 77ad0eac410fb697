"""`manage.py audit_checkpoint`: print a signed checkpoint of the audit chain's head (JSON).

Keep it outside the database (a ticket, a write-once bucket, an e-mail to the auditors): later,
`audit_verify --checkpoint FILE` proves that nothing before it changed and checks what came after.
Verifies the chain first and refuses to sign a broken one.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit import chain


class Command(BaseCommand):
    help = "Print a signed checkpoint (head sequence and chained MAC) of an intact audit trail."

    def handle(self, *args: Any, **options: Any) -> None:
        chain.seal_pending(full=True)
        result = chain.verify()
        if not result.ok:
            raise CommandError("The audit trail is not intact; run audit_verify. No checkpoint was signed.")
        self.stdout.write(json.dumps(chain.checkpoint(result), indent=2))
