"""`manage.py register_s3_dataset SOURCE s3://BUCKET/PREFIX --actor ADMIN [--classification SLUG] [--owner USER]`."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.context import cli_context
from governance.errors import DomainError
from governance.models import Classification, DataSource
from governance.services.catalog import dataset_register_s3


class Command(BaseCommand):
    help = "Register an S3 prefix of an AWS data source as a governed dataset (docs/aws.md)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", help="Name of the AWS data source.")
        parser.add_argument("location", help="s3://bucket/prefix (the prefix may be empty: the whole bucket).")
        parser.add_argument("--actor", required=True, help="Username of the governance admin registering it.")
        parser.add_argument("--classification", help="Classification slug; default: the source's default.")
        parser.add_argument("--owner", help="Username of the dataset's owner; default: the source's owner.")
        parser.add_argument("--description", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model().objects
        with cli_context("register_s3_dataset"):
            source = DataSource.objects.filter(name=options["source"]).first()
            if source is None:
                raise CommandError(f"No data source named {options['source']!r}.")
            location = str(options["location"])
            if not location.startswith("s3://"):
                raise CommandError(f"{location!r} is not an s3://bucket/prefix location.")
            bucket, _, prefix = location.removeprefix("s3://").partition("/")
            actor = users.filter(username=options["actor"]).first()
            if actor is None:
                raise CommandError(f"No user named {options['actor']!r}.")
            classification = None
            if options.get("classification"):
                classification = Classification.objects.filter(slug=options["classification"]).first()
                if classification is None:
                    raise CommandError(f"No classification {options['classification']!r}.")
            owner = None
            if options.get("owner"):
                owner = users.filter(username=options["owner"]).first()
                if owner is None:
                    raise CommandError(f"No user named {options['owner']!r}.")
            try:
                dataset = dataset_register_s3(
                    source=source,
                    actor=actor,
                    bucket=bucket,
                    prefix=prefix,
                    description=options["description"],
                    classification=classification,
                    owner=owner,
                )
            except DomainError as exc:
                raise CommandError(exc.message) from None
        self.stdout.write(
            f"Registered {location} on {source.name} as dataset #{dataset.pk} ({dataset.classification})."
        )
