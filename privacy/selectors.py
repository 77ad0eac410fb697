"""Reads of the privacy app, already narrowed to what the user may see."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import DecimalField, QuerySet, Value
from django.db.models.functions import Coalesce

from governance.errors import NotFound
from governance.models import AccessLevel, Dataset, Grant

from .models import PrivacyPolicy, PrivacyQuery


@dataclass(frozen=True)
class Budget:
    total: Decimal
    spent: Decimal

    @property
    def remaining(self) -> Decimal:
        return max(self.total - self.spent, Decimal(0))


def aggregate_grants_of(user: Any) -> QuerySet[Grant]:
    """The user's own aggregate grants, newest first, each annotated with `epsilon_spent` (one query)."""
    return (
        Grant.objects.filter(grantee_user_id=getattr(user, "pk", None), level=AccessLevel.AGGREGATE)
        .select_related("dataset__source")
        .annotate(
            epsilon_spent=Coalesce(
                "privacy_budget__spent", Value(Decimal(0)), output_field=DecimalField(max_digits=12, decimal_places=6)
            )
        )
        .order_by("-starts_at", "-pk")
    )


def aggregate_grant_of(user: Any, grant_id: int) -> Grant:
    """One of the user's aggregate grants; another's answers NotFound, as if it did not exist."""
    grant = aggregate_grants_of(user).filter(pk=grant_id).first()
    if grant is None:
        raise NotFound(f"No aggregate grant #{grant_id} of yours.")
    return grant


def budget_of(grant: Grant) -> Budget:
    spent = getattr(grant, "epsilon_spent", None)
    if spent is None:
        budget = getattr(grant, "privacy_budget", None)
        spent = budget.spent if budget is not None else Decimal(0)
    return Budget(total=grant.epsilon or Decimal(0), spent=spent)


def queries_of(grant: Grant) -> QuerySet[PrivacyQuery]:
    return PrivacyQuery.objects.filter(grant=grant).order_by("-created_at", "-pk")


def policy_of(dataset: Dataset) -> PrivacyPolicy | None:
    return PrivacyPolicy.objects.filter(dataset=dataset).prefetch_related("bounds", "categoricals").first()
