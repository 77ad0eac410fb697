"""`manage.py subjects_suggest SOURCE`: read the source's foreign keys and suggest subject
identifiers (docs/subjects.md); the owners and stewards then confirm or reject them."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.context import cli_context
from governance.errors import DomainError
from governance.models import DataSource

from ...services.identifiers import identifiers_suggest


class Command(BaseCommand):
    help = "Read a source's foreign keys and suggest the columns that identify data subjects."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", help="The data source's name.")

    def handle(self, *args: Any, **options: Any) -> None:
        source = DataSource.objects.filter(name=options["source"]).first()
        if source is None:
            raise CommandError(f"There is no data source {options['source']!r}.")
        with cli_context("subjects_suggest"):
            try:
                new = identifiers_suggest(source=source)
            except DomainError as exc:
                raise CommandError(exc.message) from None
        self.stdout.write(f"{source.name}: {new} new identifier suggestion(s); confirm them on each dataset.")
