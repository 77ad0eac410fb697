"""`manage.py quality_checks export|plan|apply`: data quality checks as code (docs/quality.md#checks-as-code).

    manage.py quality_checks export [--dataset KEY ...] [--source NAME] [--json] > checks.yaml
    manage.py quality_checks plan checks.yaml [--actor USERNAME]   # exit 0: nothing to change, 2: changes
    manage.py quality_checks apply checks.yaml --actor USERNAME

A file the portal refuses (not YAML, not the schema, an unknown dataset or column, a user who may not
change a dataset's checks) is one line on stderr and exit 1; nothing is changed. `-` reads stdin.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.context import cli_context
from governance.errors import DomainError

from ... import as_code
from ...selectors import catalog_datasets, datasets_with_checks

EXIT_CHANGES = 2


class Command(BaseCommand):
    help = "Export, plan and apply data quality checks kept as YAML (docs/quality.md#checks-as-code)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        export = sub.add_parser("export", help="Print the checks of datasets as YAML (all datasets with checks).")
        export.add_argument("--dataset", action="append", default=[], help="<source>:<schema>.<name> (repeatable)")
        export.add_argument("--source", help="Only the datasets of this source.")
        export.add_argument("--json", action="store_true", help="JSON rather than YAML.")
        plan = sub.add_parser("plan", help="Show what applying FILE would change (exit 2 when it changes something).")
        plan.add_argument("file", help="The YAML or JSON file, - for stdin.")
        plan.add_argument("--actor", help="Also say whether USERNAME may apply it.")
        apply = sub.add_parser("apply", help="Apply FILE as USERNAME, in one transaction.")
        apply.add_argument("file", help="The YAML or JSON file, - for stdin.")
        apply.add_argument("--actor", required=True, help="Whose rights apply and who the audit trail names.")

    def handle(self, *args: Any, **options: Any) -> None:
        with cli_context(f"quality_checks {options['action']}"):
            try:
                getattr(self, f"_{options['action']}")(options)
            except DomainError as exc:
                raise CommandError(" ".join(exc.message.split())) from None

    def _export(self, options: dict[str, Any]) -> None:
        datasets: Any = datasets_with_checks(source=options["source"])
        if options["dataset"]:
            within = catalog_datasets(source=options["source"])
            datasets = as_code.find_datasets(options["dataset"], within=within, what="--dataset")
        document = as_code.export_checks(datasets)
        if options["json"]:
            self.stdout.write(json.dumps(document, indent=2, ensure_ascii=False))
        else:
            self.stdout.write(as_code.to_yaml(document), ending="")

    def _plan(self, options: dict[str, Any]) -> None:
        actor = self._user(options["actor"]) if options["actor"] else None
        planned = as_code.plan(self._read(options["file"]), actor)
        self.stdout.write(planned.render(), ending="")
        if planned.changes:
            sys.exit(EXIT_CHANGES)

    def _apply(self, options: dict[str, Any]) -> None:
        actor = self._user(options["actor"])
        planned = as_code.plan(self._read(options["file"]))
        done = as_code.apply(planned, actor)
        self.stdout.write(done.render(applied=True), ending="")

    @staticmethod
    def _user(username: str) -> Any:
        actor = get_user_model().objects.filter(username=username).first()
        if actor is None:
            raise CommandError(f"--actor: there is no user {username!r}.")
        return actor

    @staticmethod
    def _read(name: str) -> Any:
        try:
            text = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        except OSError as exc:
            raise CommandError(f"{name}: {exc.strerror or exc}.") from None
        return as_code.load_yaml(text)
