"""`manage.py policy`: the portal's policy as code (docs/policy-as-code.md).

    manage.py policy export [FILE] [--section NAME ...] [--json]   # to FILE, or stdout
    manage.py policy plan FILE [--actor USERNAME]                   # exit 0: nothing to change, 2: changes
    manage.py policy apply FILE --actor USERNAME                    # in one transaction, audited as gitops
    manage.py policy adopt KIND NAME --actor USERNAME               # mark a portal-made object as managed
    manage.py policy release KIND NAME --actor USERNAME             # unmark it

A file the portal refuses (not YAML, not the schema, an unknown classification, user, role or
dataset...) is one line on stderr naming its path, and exit 1; nothing is changed. `-` reads stdin.
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

from ...document import load_yaml, to_yaml
from ...export import SECTIONS, export_document
from ...models import ManagedKind
from ...plans import plan
from ...services import policy_adopt, policy_apply, policy_release

EXIT_CHANGES = 2


class Command(BaseCommand):
    help = "Export, plan and apply the portal's policy kept as YAML (docs/policy-as-code.md)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        export = sub.add_parser("export", help="Write the policy as YAML (to FILE, or stdout).")
        export.add_argument("file", nargs="?", help="Where to write it (default: stdout).")
        export.add_argument("--section", action="append", choices=SECTIONS, help="Only this section (repeatable).")
        export.add_argument("--json", action="store_true", help="JSON rather than YAML.")
        plan_ = sub.add_parser("plan", help="Show what applying FILE would change (exit 2 when it changes something).")
        plan_.add_argument("file", help="The YAML or JSON file, - for stdin.")
        plan_.add_argument("--actor", help="Plan as USERNAME (the quality section says what they may not change).")
        apply = sub.add_parser("apply", help="Apply FILE as USERNAME, in one transaction.")
        apply.add_argument("file", help="The YAML or JSON file, - for stdin.")
        apply.add_argument("--actor", required=True, help="Whose rights apply and who the audit trail names.")
        for name, text in (
            ("adopt", "Mark an object made in the portal as managed in code."),
            ("release", "Unmark an object: the portal may change it again."),
        ):
            mark = sub.add_parser(name, help=text)
            mark.add_argument("kind", choices=ManagedKind.values)
            mark.add_argument("name", help="A classification's slug, a role's name, a standing grant's id or key.")
            mark.add_argument("--actor", required=True, help="Who the audit trail names.")
            mark.add_argument("--reason", default="", help="Why (kept in the audit trail).")

    def handle(self, *args: Any, **options: Any) -> None:
        with cli_context(f"policy {options['action']}"):
            try:
                getattr(self, f"_{options['action']}")(options)
            except DomainError as exc:
                raise CommandError(" ".join(exc.message.split())) from None

    def _export(self, options: dict[str, Any]) -> None:
        document = export_document(tuple(options["section"] or SECTIONS))
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n" if options["json"] else to_yaml(document)
        if options["file"] and options["file"] != "-":
            try:
                Path(options["file"]).write_text(text)
            except OSError as exc:
                raise CommandError(f"{options['file']}: {exc.strerror or exc}.") from None
        else:
            self.stdout.write(text, ending="")

    def _plan(self, options: dict[str, Any]) -> None:
        actor = self._user(options["actor"]) if options["actor"] else None
        planned = plan(self._read(options["file"]), actor)
        self.stdout.write(planned.render(), ending="")
        if planned.count or planned.unmanaged:
            sys.exit(EXIT_CHANGES)

    def _apply(self, options: dict[str, Any]) -> None:
        actor = self._user(options["actor"])
        planned = plan(self._read(options["file"]), actor)
        origin = "stdin" if options["file"] == "-" else Path(options["file"]).name
        done = policy_apply(planned=planned, actor=actor, origin=origin)
        self.stdout.write(done.render(applied=True), ending="")

    def _adopt(self, options: dict[str, Any]) -> None:
        marker = policy_adopt(
            kind=options["kind"], name=options["name"], actor=self._user(options["actor"]), reason=options["reason"]
        )
        self.stdout.write(f"{marker} is now managed in code: the portal refuses to change it.")

    def _release(self, options: dict[str, Any]) -> None:
        policy_release(
            kind=options["kind"], name=options["name"], actor=self._user(options["actor"]), reason=options["reason"]
        )
        self.stdout.write(f"{options['kind']} {options['name']} is released: the portal may change it again.")

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
        return load_yaml(text)
