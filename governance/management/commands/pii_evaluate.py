"""Precision and recall of PII discovery on labelled columns: `manage.py pii_evaluate [FILE ...]`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from governance.catalog.pii import evaluate as pii_evaluate

# The labelled fixtures the test suite measures (tests/catalog/pii_fixture.py writes them).
DEFAULT_FILES = ("tests/catalog/data/pii_columns.json", "tests/catalog/data/pii_columns_old.json")


class Command(BaseCommand):
    help = (
        "Run PII discovery on labelled columns (JSON: table, column, type, values, tags) and print precision "
        "and recall per tag and overall. Without files: the project's two labelled fixtures."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("files", nargs="*", help="labelled columns as JSON (default: the project's fixtures)")
        parser.add_argument("--threshold", type=float, default=float(settings.PII_MATCH_THRESHOLD))
        parser.add_argument("--min-precision", type=float, default=0.0, help="exit 1 when overall precision is lower")
        parser.add_argument("--min-recall", type=float, default=0.0, help="exit 1 when overall recall is lower")

    def handle(self, *args: Any, **options: Any) -> None:
        files = options["files"] or [str(Path(settings.BASE_DIR) / f) for f in DEFAULT_FILES]
        if not 0 < options["threshold"] <= 1:
            raise CommandError("--threshold must be between 0 and 1")
        failures = []
        for name in files:
            try:
                columns = pii_evaluate.load(name)
                result = pii_evaluate.evaluate(columns, threshold=options["threshold"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CommandError(f"{name}: not a file of labelled columns ({exc})") from exc
            shown = Path(name)
            with contextlib.suppress(ValueError):  # outside the project: shown as given
                shown = shown.resolve().relative_to(Path(settings.BASE_DIR).resolve())
            self.stdout.write(pii_evaluate.report(result, f"PII discovery on {shown}"))
            self.stdout.write("")
            precision, recall = result.overall.precision or 0.0, result.overall.recall or 0.0
            if precision < options["min_precision"] or recall < options["min_recall"]:
                failures.append(f"{shown}: precision {precision:.3f}, recall {recall:.3f}")
        if failures:
            raise CommandError("below the floor: " + "; ".join(failures))
