"""`manage.py seed_demo_subjects`: the demo's subject identifiers (after `seed_demo`): the warehouse's
foreign keys read as relationships, the identifiers suggested, and those of `sales` confirmed by the
demo steward (who looks after sales), so that an erasure or access request for a demo customer's
e-mail finds their customer row, orders and order lines. Idempotent."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from audit.context import cli_context
from governance.errors import DomainError
from governance.models import Dataset, TagStatus

from ...models import Relationship, SubjectIdentifier
from ...services.identifiers import identifiers_suggest, subject_identifier_decide


class Command(BaseCommand):
    help = "Suggest the demo warehouse's subject identifiers and confirm those of sales (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        steward = get_user_model().objects.filter(username="steward").first()
        customers = Dataset.objects.filter(schema="sales", name="customers", is_present=True).first()
        if steward is None or customers is None:
            raise CommandError("Run seed_demo first: the demo steward and sales.customers are missing.")
        source = customers.source
        confirmed = SubjectIdentifier.objects.filter(column__dataset__source=source, status=TagStatus.CONFIRMED)
        if confirmed.exists():
            self.stdout.write("subject identifiers: already there; none added")
            return
        with cli_context("seed_demo_subjects"):
            try:
                suggested = identifiers_suggest(source=source)
                waiting = SubjectIdentifier.objects.filter(
                    column__dataset__source=source, column__dataset__schema="sales", status=TagStatus.SUGGESTED
                ).order_by("pk")
                decided = [subject_identifier_decide(identifier=i, decision="confirm", actor=steward) for i in waiting]
            except DomainError as exc:
                raise CommandError(exc.message) from None
        links = Relationship.objects.filter(dataset__source=source).count()
        self.stdout.write(
            f"subject identifiers: {suggested} suggested, {len(decided)} confirmed on sales; {links} relationships"
        )
