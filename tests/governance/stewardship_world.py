"""A small estate for stewardship tests: a table with PII suggestions, two views over it (one over
the other), and a dataset of someone else with its own suggestion.

    sales.customers (Internal, owner)  <- reporting.customer_emails (view)  <- reporting.mailing (view)
    finance.payments (Internal, other_owner)

Test arrangement writes rows with the ORM; everything under test goes through services/selectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from accounts.models import User
from governance.models import (
    Column,
    ColumnDerivation,
    ColumnTag,
    Dataset,
    DatasetDependency,
    DatasetKind,
    TagStatus,
)
from governance.services.lineage import lineage_refresh


@dataclass
class Estate:
    customers: Dataset
    emails_view: Dataset
    mailing: Dataset
    payments: Dataset
    email: ColumnTag  # suggested, on customers.email
    name: ColumnTag  # suggested person_name on customers.user
    iban: ColumnTag  # suggested, on payments.iban (other_owner's)


EMAIL_FINDINGS: list[dict[str, Any]] = [
    {
        "detector": "email_pattern",
        "basis": "values",
        "shape": "name@domain",
        "matched": 29,
        "sampled": 40,
        "share": 0.725,
    },
    {"detector": "name_hint", "basis": "name", "shape": "email"},
]


def suggest(dataset: Dataset, column: str, tag: str, confidence: float, findings: list[dict[str, Any]]) -> ColumnTag:
    col = Column.objects.get(dataset=dataset, name=column)
    return ColumnTag.objects.create(
        column=col, tag=tag, status=TagStatus.SUGGESTED, confidence=confidence, findings=findings, evidence="old"
    )


def build(make_dataset: Callable[..., Dataset], owner: User, other_owner: User) -> Estate:
    customers = make_dataset("customers", schema="sales", owner=owner, columns=("id", "email", "user", "country"))
    emails_view = make_dataset("customer_emails", schema="reporting", columns=("id", "email"))
    mailing = make_dataset("mailing", schema="reporting", columns=("email",))
    Dataset.objects.filter(pk__in=[emails_view.pk, mailing.pk]).update(kind=DatasetKind.VIEW)
    payments = make_dataset("payments", schema="finance", owner=other_owner, columns=("id", "iban", "amount"))
    DatasetDependency.objects.create(dataset=emails_view, upstream=customers)
    DatasetDependency.objects.create(dataset=mailing, upstream=emails_view)
    ColumnDerivation.objects.create(
        column=emails_view.columns.get(name="email"), upstream=customers.columns.get(name="email")
    )
    ColumnDerivation.objects.create(
        column=mailing.columns.get(name="email"), upstream=emails_view.columns.get(name="email")
    )
    ColumnDerivation.objects.create(
        column=emails_view.columns.get(name="id"), upstream=customers.columns.get(name="id")
    )
    email = suggest(customers, "email", "email", 0.93, EMAIL_FINDINGS)
    name = suggest(
        customers,
        "user",
        "person_name",
        0.8,
        [{"detector": "person_name_values", "basis": "values", "shape": "Given Family", "matched": 30, "sampled": 40}],
    )
    iban = suggest(payments, "iban", "iban", 0.99, [])
    lineage_refresh(dataset_ids=[customers.pk])
    return Estate(customers, emails_view, mailing, payments, email, name, iban)
