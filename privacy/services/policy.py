"""The owner's declaration of an aggregates-only dataset: privacy unit, contribution limit, bounds
of numeric columns and categories of categorical ones (docs/privacy.md)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction

from audit import services as audit
from governance import policy as governance_policy
from governance.backends import backend_for, has_backend
from governance.errors import InvalidInput, NotPermitted
from governance.models import Dataset
from governance.services.common import refusal_recorded

from ..models import CategoricalColumn, NumericBound, PrivacyPolicy

MAX_CONTRIBUTION_LIMIT = 1000
MAX_CATEGORIES = 200
# Column types a sum can clamp (as PostgreSQL's catalog names them, without a typmod).
NUMERIC_TYPES = frozenset(
    {"smallint", "integer", "bigint", "numeric", "decimal", "real", "double precision", "money", "int2", "int4", "int8"}
)


@dataclass(frozen=True)
class Bound:
    column: str
    lower: Any
    upper: Any


@dataclass(frozen=True)
class Categories:
    column: str
    categories: list[str]


def _decimal(value: Any, field: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise InvalidInput(f"{value!r} is not a number.", field=field) from None
    if not number.is_finite() or abs(number) >= Decimal(10) ** 14:
        raise InvalidInput(f"{value!r} is not a usable bound (finite, below 10^14).", field=field)
    return number


def _numeric(data_type: str) -> bool:
    return data_type.lower().split("(")[0].strip() in NUMERIC_TYPES


def _check(
    dataset: Dataset, unit_column: str, contribution_limit: int, bounds: list[Bound], categoricals: list[Categories]
) -> None:
    if not (has_backend(dataset.source) and backend_for(dataset.source).answers_aggregates):
        raise InvalidInput(f"{dataset.source.name} cannot compute aggregates in SQL (not a database).", field="dataset")
    types = dict(dataset.columns.filter(is_present=True).values_list("name", "data_type"))
    present = set(types)
    if unit_column and unit_column not in present:
        raise InvalidInput(f"{unit_column!r} is not a column of {dataset.qualified_name}.", field="unit_column")
    if not 1 <= contribution_limit <= MAX_CONTRIBUTION_LIMIT:
        raise InvalidInput(f"The contribution limit must be 1 to {MAX_CONTRIBUTION_LIMIT}.", field="contribution_limit")
    for name, columns in (("bounds", [b.column for b in bounds]), ("categoricals", [c.column for c in categoricals])):
        for column in columns:
            if column not in present:
                raise InvalidInput(f"{column!r} is not a column of {dataset.qualified_name}.", field=name)
        if len(set(columns)) != len(columns):
            raise InvalidInput("Each column may be declared once.", field=name)
    for bound in bounds:
        if bound.column in present and not _numeric(types[bound.column]):
            raise InvalidInput(
                f"{bound.column} is {types[bound.column]}, not a number: it cannot be bounded.", field="bounds"
            )
        if _decimal(bound.lower, "bounds") >= _decimal(bound.upper, "bounds"):
            raise InvalidInput(f"The lower bound of {bound.column} must be below its upper bound.", field="bounds")
    for declared in categoricals:
        cats = [str(c) for c in declared.categories]
        if not cats or len(cats) > MAX_CATEGORIES or len(set(cats)) != len(cats) or any(not c for c in cats):
            raise InvalidInput(
                f"{declared.column} needs 1 to {MAX_CATEGORIES} distinct, non-empty categories.", field="categoricals"
            )


def privacy_policy_save(
    *,
    dataset: Dataset,
    actor: Any,
    aggregates_only: bool,
    unit_column: str = "",
    contribution_limit: int = 1,
    bounds: Iterable[Bound] = (),
    categoricals: Iterable[Categories] = (),
) -> PrivacyPolicy:
    """Mark (or unmark) the dataset aggregates only and replace its declarations. Its owners and
    stewards, governance admins and security officers may (governance.policy.may_decide_tags).

    Marking a dataset does not end raw grants already held on it: review them (docs/privacy.md)."""
    bounds, categoricals = list(bounds), list(categoricals)
    unit_column = (unit_column or "").strip()
    with refusal_recorded(action="privacy.policy_saved", actor=actor, target=dataset):
        with transaction.atomic():
            locked = Dataset.objects.select_for_update().get(pk=dataset.pk)
            if not governance_policy.may_decide_tags(actor, locked):
                raise NotPermitted(
                    f"Only the owners and stewards of {locked.qualified_name} declare its privacy policy."
                )
            _check(locked, unit_column, contribution_limit, bounds, categoricals)
            before = {"aggregates_only": locked.aggregates_only}
            Dataset.objects.filter(pk=locked.pk).update(aggregates_only=aggregates_only)
            policy, _ = PrivacyPolicy.objects.update_or_create(
                dataset=locked, defaults={"unit_column": unit_column, "contribution_limit": contribution_limit}
            )
            policy.bounds.all().delete()
            policy.categoricals.all().delete()
            NumericBound.objects.bulk_create(
                NumericBound(
                    policy=policy, column=b.column, lower=_decimal(b.lower, "bounds"), upper=_decimal(b.upper, "bounds")
                )
                for b in bounds
            )
            CategoricalColumn.objects.bulk_create(
                CategoricalColumn(policy=policy, column=c.column, categories=[str(x) for x in c.categories])
                for c in categoricals
            )
            audit.record(
                action="privacy.policy_saved",
                actor=actor,
                target=locked,
                changes={"aggregates_only": [before["aggregates_only"], aggregates_only]},
                metadata={
                    "unit": unit_column or "each row",
                    "contribution_limit": contribution_limit,
                    "bounds": {b.column: [str(b.lower), str(b.upper)] for b in bounds},
                    "categoricals": {c.column: [str(x) for x in c.categories] for c in categoricals},
                },
            )
    return policy
