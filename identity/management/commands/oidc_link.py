"""`manage.py oidc_link USERNAME SUBJECT --actor SUPERUSER [--issuer URL]`."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.context import cli_context
from governance.errors import DomainError
from identity.oidc import config
from identity.oidc.services import oidc_identity_link


class Command(BaseCommand):
    help = (
        "Link an existing portal account to the identity provider's subject (`sub`), so that the person's "
        "OIDC sign-in lands in it. Sign-in never links by email by itself (docs/identity.md)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("subject", help="The provider's `sub` for the person (Okta: the user id; Entra ID: oid).")
        parser.add_argument("--actor", required=True, help="Username of the superuser linking it.")
        parser.add_argument("--issuer", help="The provider's issuer; default: from OIDC_OP_DISCOVERY_URL.")

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model().objects
        with cli_context("oidc_link"):
            issuer = options.get("issuer") or ""
            if not issuer:
                if not config.enabled():
                    raise CommandError("OIDC is not configured: pass --issuer or set the OIDC settings.")
                try:
                    issuer = config.provider().issuer
                except config.ProviderUnavailable as exc:
                    raise CommandError(f"The provider's discovery document: {exc}. Pass --issuer.") from None
            actor = users.filter(username=options["actor"]).first()
            if actor is None:
                raise CommandError(f"No user named {options['actor']!r}.")
            user = users.filter(username=options["username"]).first()
            if user is None:
                raise CommandError(f"No user named {options['username']!r}.")
            try:
                oidc_identity_link(actor=actor, user=user, issuer=issuer, subject=options["subject"])
            except DomainError as exc:
                raise CommandError(exc.message) from None
        self.stdout.write(f"{user.username} signs in as {options['subject']} at {issuer}.")
