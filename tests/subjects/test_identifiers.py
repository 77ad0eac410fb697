"""Identifier suggestions and decisions, relationships read from the sources' foreign keys or
declared by the owner, and who may set a dataset's handling."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from governance.errors import ConflictError, InvalidInput, NotPermitted
from governance.models import TagStatus
from subjects.models import DatasetHandling, Relationship, RelationshipOrigin, SubjectIdentifier
from subjects.services.identifiers import (
    dataset_handling_set,
    identifiers_suggest,
    relationship_declare,
    subject_identifier_decide,
)

from .conftest import HOSTILE, dataset, dba

pytestmark = pytest.mark.django_db(transaction=True)


def described(qs: Any) -> set[tuple[str, str, str]]:
    return {(i.column.dataset.name, i.column.name, i.kind) for i in qs.select_related("column__dataset")}


def test_foreign_keys_are_read_and_identifiers_suggested(crm: Any, owner: Any, analyst: Any, gov_admin: Any) -> None:
    with pytest.raises(NotPermitted, match="Only privacy officers and governance admins"):
        identifiers_suggest(source=crm, actor=owner)
    assert not Relationship.objects.exists()
    assert identifiers_suggest(source=crm, actor=gov_admin) == 3
    links = {
        (r.dataset.name, tuple(r.columns), r.referenced.name, tuple(r.referenced_columns), r.origin)
        for r in Relationship.objects.select_related("dataset", "referenced")
    }
    assert links == {
        ("orders", ("customer_id",), "customers", ("id",), RelationshipOrigin.FOREIGN_KEY),
        (HOSTILE, ("order_id",), "orders", ("id",), RelationshipOrigin.FOREIGN_KEY),
    }
    assert described(SubjectIdentifier.objects.all()) == {
        ("customers", "email", "email"),
        ("events", "customer_email", "email"),
        ("customers", "id", "customer_id"),
    }
    assert set(SubjectIdentifier.objects.values_list("status", flat=True)) == {TagStatus.SUGGESTED}

    ident = SubjectIdentifier.objects.get(kind="customer_id")
    with pytest.raises(NotPermitted, match="Only an owner or steward"):
        subject_identifier_decide(identifier=ident, decision="confirm", actor=analyst)
    with pytest.raises(InvalidInput, match="confirm or reject"):
        subject_identifier_decide(identifier=ident, decision="maybe", actor=owner)
    ident = subject_identifier_decide(identifier=ident, decision="reject", actor=owner)
    assert (ident.status, ident.decided_by) == (TagStatus.REJECTED, owner)

    # A second pass suggests nothing new and leaves the decision alone; a dropped key goes away.
    dba(crm.database, "ALTER TABLE crm.orders DROP CONSTRAINT orders_customer_id_fkey")
    assert identifiers_suggest(source=crm, actor=gov_admin) == 0
    ident.refresh_from_db()
    assert ident.status == TagStatus.REJECTED
    assert Relationship.objects.count() == 1
    dba(crm.database, "ALTER TABLE crm.orders ADD FOREIGN KEY (customer_id) REFERENCES crm.customers (id)")
    event = AuditEvent.objects.filter(action="subject_relationships.discovered").latest("pk")
    assert event.metadata == {"foreign_keys": 1, "removed": 1}


def test_owners_declare_relationships_and_set_handling(crm: Any, shop: Any, owner: Any, analyst: Any) -> None:
    events, customers = dataset(crm, "crm", "events"), dataset(crm, "crm", "customers")
    with pytest.raises(NotPermitted):
        relationship_declare(
            actor=analyst,
            dataset=events,
            columns=["customer_email"],
            referenced=customers,
            referenced_columns=["email"],
        )
    with pytest.raises(InvalidInput, match="has no column 'nope'") as bad:
        relationship_declare(
            actor=owner, dataset=events, columns=["nope"], referenced=customers, referenced_columns=["email"]
        )
    assert bad.value.field == "columns"
    with pytest.raises(InvalidInput, match="same source"):
        relationship_declare(
            actor=owner,
            dataset=events,
            columns=["customer_email"],
            referenced=dataset(shop, "shop", "customers"),
            referenced_columns=["email"],
        )
    rel = relationship_declare(
        actor=owner, dataset=events, columns=["customer_email"], referenced=customers, referenced_columns=["email"]
    )
    assert (rel.origin, rel.declared_by) == (RelationshipOrigin.DECLARED, owner)
    with pytest.raises(ConflictError, match="known already"):
        relationship_declare(
            actor=owner, dataset=events, columns=["customer_email"], referenced=customers, referenced_columns=["email"]
        )

    with pytest.raises(InvalidInput, match="Say why") as no_reason:
        dataset_handling_set(actor=owner, dataset=events, action="retain", legal_basis="legal_hold")
    assert no_reason.value.field == "reason"
    with pytest.raises(InvalidInput) as no_basis:
        dataset_handling_set(actor=owner, dataset=events, action="retain", reason="litigation 2026-17")
    assert no_basis.value.field == "legal_basis"
    with pytest.raises(NotPermitted):
        dataset_handling_set(actor=analyst, dataset=events, action="erase")
    assert not DatasetHandling.objects.exists()
    handling = dataset_handling_set(
        actor=owner, dataset=events, action="retain", legal_basis="legal_hold", reason="litigation 2026-17"
    )
    assert (handling.action, handling.set_by) == ("retain", owner)
    assert AuditEvent.objects.filter(action="subject_handling.set", outcome="denied").count() == 3


def test_the_suggest_command(shop: Any) -> None:
    out = io.StringIO()
    call_command("subjects_suggest", shop.name, stdout=out)
    assert out.getvalue() == f"{shop.name}: 2 new identifier suggestion(s); confirm them on each dataset.\n"
    assert described(SubjectIdentifier.objects.all()) == {
        ("customers", "email", "email"),
        ("customers", "id", "customer_id"),
    }
    event = AuditEvent.objects.get(action="subject_identifiers.suggested")
    assert (event.actor, event.metadata) == (None, {"new": 2})
    with pytest.raises(CommandError, match="There is no data source 'nope'"):
        call_command("subjects_suggest", "nope")
