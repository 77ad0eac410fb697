"""The acceptance test of policy that follows the data, end to end on a real target and worker.

A view over a Restricted table is Restricted: a whole-view request needs the owner and a security
officer, and its grant leaves the table's SSN out, which the grantee then cannot SELECT through the
view (nor the table itself, which was never granted). Naming the SSN column gets it, after the same
two stages.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg2 import sql

from governance.models import Classification, Column, Dataset, Grant, GrantStatus
from governance.provisioning import grant_principal
from governance.services import catalog as catalog_svc
from governance.services.requests import access_request_approve, access_request_submit
from governance.services.sync import datasource_sync
from tests import tls_target
from tests.provisioning.conftest import admin_connection, target_can, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker"), pytest.mark.worker]

DDL = [
    "CREATE SCHEMA lin_hr",
    "CREATE SCHEMA lin_reporting",
    "CREATE TABLE lin_hr.staff (employee_id int PRIMARY KEY, full_name text, ssn text)",
    "INSERT INTO lin_hr.staff VALUES (1, 'Ada Lovelace', '078-05-1120')",
    "CREATE VIEW lin_reporting.directory AS SELECT employee_id, full_name, ssn FROM lin_hr.staff",
]


@pytest.fixture
def view_warehouse(target_source: Any) -> Iterator[Any]:
    conn = admin_connection(target_source.database)
    with conn.cursor() as cur:
        for statement in DDL:
            cur.execute(statement)
        for schema in ("lin_hr", "lin_reporting"):
            tls_target.grant_schema(cur, schema, tls_target.PORTAL_ROLE)
    try:
        datasource_sync(source=target_source)
        yield target_source
    finally:
        with conn.cursor() as cur:
            for schema in ("lin_reporting", "lin_hr"):
                cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.close()


def approve_both(request: Any, owner: Any, officer: Any) -> Grant:
    access_request_approve(access_request=request, approver=owner)
    access_request_approve(access_request=request, approver=officer)
    grant = Grant.objects.get(source_request=request)
    wait_for(lambda: Grant.objects.get(pk=grant.pk).status == GrantStatus.ACTIVE, timeout=30)
    return grant


def test_a_view_over_a_restricted_table_grants_its_pii_only_when_named(
    view_warehouse: Any, analyst: Any, owner: Any, officer: Any, gov_admin: Any
) -> None:
    table = Dataset.objects.get(source=view_warehouse, schema="lin_hr", name="staff")
    catalog_svc.dataset_update(
        dataset=table, actor=gov_admin, classification=Classification.objects.get(slug="restricted")
    )
    catalog_svc.column_tag_add(column=Column.objects.get(dataset=table, name="ssn"), tag="ssn", actor=owner)
    view = Dataset.objects.get(source=view_warehouse, schema="lin_reporting", name="directory")
    assert view.classification.slug == "restricted" and view.declared_classification.slug == "confidential"

    whole = access_request_submit(
        requester=analyst, dataset=view, justification="team directory", duration=dt.timedelta(days=3)
    )
    assert whole.required_stages == ["owner", "security_officer"]
    assert whole.covered_columns == ["employee_id", "full_name"]
    grant = approve_both(whole, owner, officer)
    db, role = view_warehouse.database, grant_principal(grant).db_role
    assert target_can(db, role, "SELECT employee_id, full_name FROM lin_reporting.directory")
    assert not target_can(db, role, "SELECT ssn FROM lin_reporting.directory")
    assert not target_can(db, role, "SELECT * FROM lin_reporting.directory")
    assert not target_can(db, role, "SELECT employee_id FROM lin_hr.staff")

    named = access_request_submit(
        requester=analyst,
        dataset=view,
        justification="payroll reconciliation",
        duration=dt.timedelta(days=1),
        columns=[Column.objects.get(dataset=view, name="ssn")],
    )
    assert named.required_stages == ["owner", "security_officer"] and named.policy["pii_included"] == ["ssn"]
    approve_both(named, owner, officer)
    assert target_can(db, role, "SELECT ssn FROM lin_reporting.directory")
    assert not target_can(db, role, "SELECT ssn FROM lin_hr.staff")
