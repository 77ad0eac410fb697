"""`manage.py map_principal SOURCE NAME (--user USERNAME | --role SLUG) --actor ADMIN`."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.context import cli_context
from governance.errors import DomainError
from governance.models import DataSource, Role
from governance.services.principals import source_principal_map


class Command(BaseCommand):
    help = (
        "Map a person or a portal role to an identity that already exists on a source: a PostgreSQL "
        "login role, or on AWS user/NAME or role/NAME (required there: the portal creates no IAM identities)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source")
        parser.add_argument("name", help="e.g. alice (PostgreSQL), user/alice or role/analysts (AWS).")
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", help="Username of the person.")
        who.add_argument("--role", help="Slug of the portal role.")
        parser.add_argument("--actor", required=True, help="Username of the governance admin mapping it.")

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model().objects
        with cli_context("map_principal"):
            source = DataSource.objects.filter(name=options["source"]).first()
            if source is None:
                raise CommandError(f"No data source named {options['source']!r}.")
            actor = users.filter(username=options["actor"]).first()
            if actor is None:
                raise CommandError(f"No user named {options['actor']!r}.")
            user = role = None
            if options.get("user"):
                user = users.filter(username=options["user"]).first()
                if user is None:
                    raise CommandError(f"No user named {options['user']!r}.")
            else:
                role = Role.objects.filter(slug=options["role"]).first()
                if role is None:
                    raise CommandError(f"No portal role {options['role']!r}.")
            try:
                row = source_principal_map(source=source, actor=actor, name=options["name"], user=user, role=role)
            except DomainError as exc:
                raise CommandError(exc.message) from None
        self.stdout.write(f"{user or role} is {row.db_role} on {source.name}.")
