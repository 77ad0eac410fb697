"""`manage.py catalog_sync SOURCE [--actor USERNAME]`: sync one data source's catalog now."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.context import cli_context
from governance.errors import DomainError
from governance.models import DataSource
from governance.services.sync import datasource_sync


class Command(BaseCommand):
    help = (
        "Read a data source's schemas, tables, views and columns (AWS: the fields of its S3 prefixes) "
        "into the catalog and suggest PII tags."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", help="Name of the data source, e.g. demo_warehouse.")
        parser.add_argument(
            "--actor",
            help="Username the sync is recorded for (a governance admin); without it, the system syncs.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        with cli_context("catalog_sync"):
            name = options["source"]
            source = DataSource.objects.filter(name=name).first()
            if source is None:
                known = ", ".join(DataSource.objects.order_by("name").values_list("name", flat=True)) or "none"
                raise CommandError(f"No data source named {name!r}. Known: {known}")
            actor = None
            if options.get("actor"):
                actor = get_user_model().objects.filter(username=options["actor"]).first()
                if actor is None:
                    raise CommandError(f"No user named {options['actor']!r}.")
            try:
                result = datasource_sync(source=source, actor=actor)
            except DomainError as exc:
                # One line, no traceback: the message is written for the operator and holds no secret.
                raise CommandError(exc.message) from None
        self.stdout.write(f"{source.name}: {result.summary()}")
