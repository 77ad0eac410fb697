"""Identifier suggestions follow the catalog: a sync that finds a new table referencing a subject
table has a real worker read the source's foreign keys and suggest the key, with nobody asking
(governance publishes `catalog_synced`; it never imports subjects)."""

from __future__ import annotations

from typing import Any

import pytest

from governance.services.sync import datasource_sync
from subjects.models import IdentifierKind, Relationship, SubjectIdentifier
from tests.provisioning.conftest import wait_for

from .conftest import dba

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

DDL = [
    "CREATE TABLE shop.clients (client_no int PRIMARY KEY, nickname text)",
    "CREATE TABLE shop.visits (id int PRIMARY KEY, client_no int REFERENCES shop.clients (client_no))",
]


def test_a_sync_that_finds_a_new_client_key_suggests_it(celery_worker: Any, shop: Any, settings: Any) -> None:
    # Off in the other tests (config/settings/test.py): the suggestions' events, written by the
    # session's worker whenever it gets to them, would land among what those tests count.
    settings.SUBJECTS_SUGGEST_AFTER_SYNC = True
    dba(shop.database, "DROP TABLE IF EXISTS shop.visits, shop.clients", *DDL)
    try:
        assert not SubjectIdentifier.objects.filter(column__dataset__name="clients").exists()
        datasource_sync(source=shop)

        found = wait_for(
            lambda: SubjectIdentifier.objects.filter(
                column__dataset__source=shop, column__dataset__name="clients", column__name="client_no"
            ).first(),
            timeout=30,
        )
        assert (found.kind, found.status) == (IdentifierKind.CUSTOMER_ID, "suggested")
        assert found.evidence == "key of clients, referenced by visits"
        assert Relationship.objects.filter(dataset__name="visits", referenced__name="clients").exists()
    finally:
        dba(shop.database, "DROP TABLE IF EXISTS shop.visits, shop.clients")
