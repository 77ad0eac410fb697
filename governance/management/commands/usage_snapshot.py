"""`manage.py usage_snapshot [SOURCE]`: read a source's use now (the beat job, by hand)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.context import cli_context
from governance.models import DataSource
from governance.services.usage import UsageReadFailed, usage_snapshot_all, usage_snapshot_take


class Command(BaseCommand):
    help = (
        "Read each source's use (pg_stat_statements, IAM's last-accessed data) and record when each "
        "grant was last used (docs/usage.md). Without SOURCE: every source with provisioning on."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", nargs="?", help="Name of the data source, e.g. demo_warehouse.")

    def handle(self, *args: Any, **options: Any) -> None:
        with cli_context("usage_snapshot"):
            name = options.get("source")
            if not name:
                for each, outcome in usage_snapshot_all().items():
                    self.stdout.write(f"{each}: {_line(outcome)}")
                return
            source = DataSource.objects.filter(name=name).first()
            if source is None:
                known = ", ".join(DataSource.objects.order_by("name").values_list("name", flat=True)) or "none"
                raise CommandError(f"No data source named {name!r}. Known: {known}")
            try:
                result = usage_snapshot_take(source=source)
            except UsageReadFailed as exc:
                raise CommandError(f"{source.name}: {exc.message}") from None
        self.stdout.write(f"{source.name}: {_line(result.as_dict())}")


def _line(outcome: dict[str, Any] | str) -> str:
    if isinstance(outcome, str):
        return f"not read: {outcome}"
    if not outcome["can_tell"]:
        return f"cannot tell: {outcome['reason']}"
    return f"watching; {outcome['grants_used']} grant(s) seen used since the last reading"
