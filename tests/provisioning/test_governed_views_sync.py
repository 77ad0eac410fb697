"""Governed views follow the base table: a column added to (or removed from) a table that a treated
whole-table grant reads is in (or out of) the grantee's view after the next catalog sync, re-created
by the provisioning engine and verified, with the old view gone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from psycopg2 import sql

from audit.models import AuditEvent
from governance.models import DriftFinding, Grant
from governance.provisioning import grant_principal, package_of
from governance.services.reconcile import reconcile_source
from governance.services.reconcile.views import governed_views_follow
from governance.services.sync import datasource_sync
from tests.provisioning import test_governed_views as governed
from tests.provisioning.conftest import admin_connection, dba, wait_for
from tests.provisioning.test_governed_views import as_role

pytestmark = [pytest.mark.django_db(transaction=True)]

TABLE = sql.Identifier("Sales EU", "customers")
customers = governed.customers  # the fixture: "Sales EU".customers, email confirmed PII


@pytest.fixture(autouse=True)
def table_shape_restored(customers: Any) -> Iterator[None]:
    """The target's table is shared by the run: the columns these tests add leave with them."""
    yield
    for column in ("city", "nickname"):
        dba(
            customers.source.database,
            sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {} CASCADE").format(TABLE, sql.Identifier(column)),
        )


def _whole_table_masked(analyst: Any, owner: Any, ds: Any) -> Grant:
    return governed.request_treated(analyst, owner, ds, {"email": "masked"}, columns=())


def _exists(source: Any, schema: str, name: str) -> bool:
    conn = admin_connection(source.database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", [sql.Identifier(schema, name).as_string(conn)])
            return cur.fetchone()[0] is not None
    finally:
        conn.close()


@pytest.mark.usefixtures("celery_worker")
def test_a_column_added_to_the_base_table_reaches_the_governed_view_after_sync(
    customers: Any,
    analyst: Any,
    owner: Any,
) -> None:
    grant = _whole_table_masked(analyst, owner, customers)
    role = grant_principal(grant).db_role
    before = package_of(customers, "read", grant.columns, grant.treatments)
    dba(customers.source.database, sql.SQL("ALTER TABLE {} ADD COLUMN city text DEFAULT 'Paris'").format(TABLE))

    datasource_sync(source=customers.source)
    after = package_of(customers, "read", grant.columns, grant.treatments)
    assert after.obj != before.obj  # a new definition, a new view
    wait_for(lambda: _exists(customers.source, after.obj.schema, after.obj.name), timeout=30)
    view = sql.Identifier(after.obj.schema, after.obj.name)
    wait_for(
        lambda: bool(as_role(customers.source, role, sql.SQL("SELECT 1 FROM {} LIMIT 1").format(view))), timeout=30
    )
    rows = as_role(customers.source, role, sql.SQL("SELECT email, city FROM {}").format(view))
    assert rows == [("a***@example.com", "Paris")]
    wait_for(lambda: not _exists(customers.source, before.obj.schema, before.obj.name), timeout=30)
    assert reconcile_source(source=customers.source).clean
    assert not DriftFinding.objects.open().exists()
    event = AuditEvent.objects.get(action="governed_view.followed")
    assert event.outcome == "success" and event.target_id == str(customers.pk)
    assert event.metadata["views"] == [str(after.obj)] and event.metadata["left"] == [str(before.obj)]
    # Nothing changed since: a second sync publishes nothing and the follow finds nothing to do.
    assert governed_views_follow(source=customers.source) == []


@pytest.mark.usefixtures("celery_worker")
def test_a_column_dropped_with_cascade_takes_the_view_and_the_next_sync_brings_one_back(
    customers: Any,
    analyst: Any,
    owner: Any,
) -> None:
    dba(customers.source.database, sql.SQL("ALTER TABLE {} ADD COLUMN nickname text").format(TABLE))
    datasource_sync(source=customers.source)
    grant = _whole_table_masked(analyst, owner, customers)
    role = grant_principal(grant).db_role
    before = package_of(customers, "read", grant.columns, grant.treatments)
    # PostgreSQL refuses to drop a column a view reads; CASCADE drops the view with it.
    dba(customers.source.database, sql.SQL("ALTER TABLE {} DROP COLUMN nickname CASCADE").format(TABLE))
    assert not _exists(customers.source, before.obj.schema, before.obj.name)

    datasource_sync(source=customers.source)
    after = package_of(customers, "read", grant.columns, grant.treatments)
    view = sql.Identifier(after.obj.schema, after.obj.name)
    wait_for(lambda: _exists(customers.source, after.obj.schema, after.obj.name), timeout=30)
    wait_for(lambda: AuditEvent.objects.filter(action="governed_view.followed").exists(), timeout=30)
    assert as_role(customers.source, role, sql.SQL("SELECT * FROM {}").format(view)) == [
        (1, "Ada Lovelace", "a***@example.com", "UK")
    ]
    # The old package held nothing once its view was gone: the reconciler drops it as an orphan.
    repaired = reconcile_source(source=customers.source, fix=True)
    assert not repaired.errors, repaired.errors
    final = reconcile_source(source=customers.source)
    assert final.clean, (repaired.drift, final.drift)
    assert as_role(customers.source, role, sql.SQL("SELECT email FROM {}").format(view)) == [("a***@example.com",)]
