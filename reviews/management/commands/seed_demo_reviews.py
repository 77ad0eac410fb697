"""`manage.py seed_demo_reviews`: the demo's access review (after `seed_demo`, which `make run` runs
first): a quarterly campaign over every Restricted grant, and its first occurrence opened now, so
that the owner and the officer find items in their review inbox. Idempotent."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from audit.context import cli_context
from governance.errors import DomainError
from governance.models import Classification

from ...models import ReviewCampaign
from ...services.campaigns import review_campaign_create, review_campaign_start

NAME = "Quarterly review of Restricted access"


class Command(BaseCommand):
    help = "Add the demo's quarterly access review over Restricted grants and open its first round (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        officer = get_user_model().objects.filter(username="officer").first()
        restricted = Classification.objects.filter(slug="restricted").first()
        if officer is None or restricted is None:
            raise CommandError("Run seed_demo first: the demo officer and the Restricted classification are missing.")
        if ReviewCampaign.objects.filter(name=NAME).exists():
            self.stdout.write("access review: already there; none added")
            return
        with cli_context("seed_demo_reviews"):
            try:
                review_campaign_create(
                    actor=officer, name=NAME, classification=restricted, recurrence="quarterly",
                    deadline_action="escalate", description="Every Restricted grant, re-confirmed each quarter.",
                )  # fmt: skip
                first = review_campaign_create(
                    actor=officer, name=f"{NAME} (first round)", classification=restricted, deadline_action="escalate"
                )
                first = review_campaign_start(campaign=first, actor=officer)
            except DomainError as exc:
                raise CommandError(exc.message) from None
        self.stdout.write(f"access review: quarterly campaign added; first round open with {first.items.count()} items")
