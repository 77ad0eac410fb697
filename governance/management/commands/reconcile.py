"""`manage.py reconcile [--source NAME] [--fix]`: find (and repair) drift between grants and targets.

Exit status, for scripts and monitoring: 0 when no drift remains (also after `--fix` repaired all
of it), 1 when drift remains; a one-line error and exit 1 (no traceback) for an unknown source or a
target that cannot be read.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.context import cli_context
from governance.errors import DomainError
from governance.models import DataSource
from governance.selectors.catalog import provisioned_sources
from governance.services.reconcile import ReconcileResult, reconcile_source


class Command(BaseCommand):
    help = (
        "Compare the privileges the portal's roles really hold on PostgreSQL and AWS sources with the grants in "
        "force; report missing, unexpected and expired-but-present privileges; repair them with --fix."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--source",
            help="Name of one data source; without it, every provisioning-enabled PostgreSQL and AWS source.",
        )
        parser.add_argument(
            "--fix", action="store_true", help="Converge the target for every finding (revoke or grant), then verify."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        fix: bool = options["fix"]
        with cli_context("reconcile"):
            sources = self._sources(options.get("source"))
            failures: list[str] = []
            remaining = 0
            for source in sources:
                try:
                    result = reconcile_source(source=source, fix=fix)
                except DomainError as exc:
                    # One line, no traceback: written for the operator, holds no secret (audited).
                    failures.append(f"{source.name}: {exc.message}")
                    self.stderr.write(f"{source.name}: {exc.message}")
                    continue
                self._report(result)
                remaining += result.remaining
        if failures:
            raise CommandError("Reconcile failed for " + "; ".join(failures))
        if remaining:
            self.stderr.write(f"Drift remains: {remaining} finding(s).")
            sys.exit(1)

    def _sources(self, name: str | None) -> list[DataSource]:
        if name is None:
            return list(provisioned_sources())
        source = DataSource.objects.filter(name=name).first()
        if source is None:
            known = ", ".join(DataSource.objects.order_by("name").values_list("name", flat=True)) or "none"
            raise CommandError(f"Unknown data source {name!r} (known: {known}).")
        return [source]

    def _report(self, result: ReconcileResult) -> None:
        self.stdout.write(f"{result.source}: {result.summary()}")
        for line in result.lines():
            self.stdout.write(f"  {line}")
        for error in result.errors:
            self.stdout.write(f"  repair failed: {error}")
        for warning in result.posture:
            self.stdout.write(f"  posture: {warning}")
