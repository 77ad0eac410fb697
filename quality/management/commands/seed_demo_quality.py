"""`manage.py seed_demo_quality`: the demo's data quality checks (after `seed_demo`, which `make run`
runs first) on sales.customers, one of which fails on the demo data (a country outside the list),
and a first run, so that the dataset page, the catalog and the dashboard show quality at once.
Idempotent."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from audit.context import cli_context
from governance.errors import DomainError
from governance.models import Dataset

from ...services.checks import quality_check_create
from ...services.runs import quality_run

CHECKS: list[dict[str, Any]] = [
    {"name": "email present", "kind": "completeness", "column": "email"},
    {"name": "one row per customer", "kind": "uniqueness", "column": "customer_id"},
    {
        "name": "countries we ship to",
        "kind": "allowed_values",
        "column": "country",
        "params": {"values": ["US", "GB", "DE", "FR", "NL"]},
        "description": "The shop ships to five countries; other values are data entry errors.",
    },
    {"name": "at least 20 customers", "kind": "row_count", "threshold": 20, "params": {"max_change_fraction": 0.5}},
]


class Command(BaseCommand):
    help = "Add the demo's quality checks on sales.customers and run them once (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        owner = get_user_model().objects.filter(username="owner").first()
        dataset = Dataset.objects.filter(schema="sales", name="customers", is_present=True).first()
        if owner is None or dataset is None:
            raise CommandError("Run seed_demo first: the demo owner and sales.customers are missing.")
        if dataset.quality_checks.exists():
            self.stdout.write("quality checks: already there; none added")
            return
        with cli_context("seed_demo_quality"):
            try:
                for check in CHECKS:
                    quality_check_create(actor=owner, dataset=dataset, **check)
                run = quality_run(dataset=dataset, actor=owner)
            except DomainError as exc:
                raise CommandError(exc.message) from None
        self.stdout.write(f"quality checks: {len(CHECKS)} added on sales.customers; first run {run.status}")
