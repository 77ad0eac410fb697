"""`manage.py audit_accept_unsealed --reason TEXT [--event ID ...] [--actor USERNAME] [--wait SECONDS]`: seal events the
sealer left alone, as a recorded decision.

The sealer does not seal, on its own, an event that was already older than
AUDIT_SEAL_MAX_DELAY_SECONDS when the chain's head was sealed (its seal was removed, or it was
slipped in late), nor start a first chain over events that old. `audit_verify` reports them as
`unsealed`. After finding out why (a transaction that really ran that long, a restore), accept them:
they are sealed at the head of the chain, in one transaction with an `audit.unsealed_accepted` event
naming them and the reason. Without --event, every unsealed event with a valid MAC is accepted (they
are listed). Never over an anchor: when a witness anchored a chain the database no longer holds, the
seals must be restored, not started again. A sealer that is running (the beat's, every few seconds)
is waited for, up to --wait seconds; nothing is recorded as accepted unless it was sealed. Exit 1
when refused.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import chain
from audit.context import cli_context


class Command(BaseCommand):
    help = "Seal unsealed audit events the sealer refused, recording who accepted them and why."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reason", required=True, help="Why these events are genuine (recorded).")
        parser.add_argument("--event", type=int, action="append", dest="events", help="An event id (repeatable).")
        parser.add_argument("--actor", help="Username the decision is recorded for.")
        parser.add_argument(
            "--wait",
            type=float,
            default=chain.ACCEPT_LOCK_WAIT,
            help="Seconds to wait for a running sealer before giving up (default %(default)s).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        actor = None
        if options.get("actor"):
            actor = get_user_model().objects.filter(username=options["actor"]).first()
            if actor is None:
                raise CommandError(f"No user named {options['actor']!r}.")
        with cli_context("audit_accept_unsealed"):
            try:
                result = chain.unsealed_events_accept(
                    actor=actor, reason=options["reason"], event_ids=options["events"], lock_wait=options["wait"]
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        if not result.sealed:
            self.stdout.write("no unsealed event with a valid MAC: nothing to accept")
            return
        self.stdout.write(f"sealed {result.sealed} events (with the audit.unsealed_accepted event that records it)")
