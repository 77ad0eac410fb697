"""Row filters compiled to row-level security on the real TLS target (docs/privacy.md "Row filters"):
counted as the grantee, verified by the engine, repaired by the reconciler."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from psycopg2 import sql

from accounts.roles import REQUESTERS
from governance.errors import InvalidInput
from governance.models import Dataset, DataSource, Grant, GrantStatus, JobStatus
from governance.provisioning import grant_principal
from governance.services.reconcile import reconcile_source
from governance.services.requests import access_request_approve, access_request_submit
from governance.services.row_filters import grantee_attributes_set, row_filter_define
from governance.services.sync import datasource_sync
from tests.provisioning.conftest import ROLE_PREFIX, admin_connection, wait_for
from tests.provisioning.test_reconcile import approve_read, clean_target, run_sql
from tests.tls_target import current

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker", "clean_target")]
__all__ = ["clean_target"]

HOSTILE = 'Ré"gion x'  # a column name with a quote, a space and a non-ASCII letter
TABLE = sql.Identifier("finance", "regions")
COUNT = "SELECT count(*) FROM finance.regions"


@pytest.fixture
def regions(target_source: DataSource) -> Dataset:
    """finance.regions, 3 EU rows and 2 US rows over two tenants, owned by a NOLOGIN owner role the
    portal's login is a member of (what docs/security.md asks for tables under row filters)."""
    owner = sql.Identifier(ROLE_PREFIX + "tblowner")
    portal = sql.Identifier(current().portal_role)
    for statement in [
        sql.SQL("CREATE ROLE {} NOLOGIN").format(owner),
        sql.SQL("GRANT USAGE ON SCHEMA finance TO {}").format(owner),
        sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, region text, tenant_id text, {} text)").format(
            TABLE, sql.Identifier(HOSTILE)
        ),
        sql.SQL(
            "INSERT INTO {} VALUES (1,'EU','a','x'),(2,'EU','a','y'),(3,'EU','b','x'),(4,'US','b','x'),(5,'US','b','y')"
        ).format(TABLE),
        sql.SQL("ALTER TABLE {} OWNER TO {}").format(TABLE, owner),
        sql.SQL("GRANT {} TO {}").format(owner, portal),
    ]:
        run_sql(target_source, statement, as_dba=True)
    datasource_sync(source=target_source)
    return Dataset.objects.get(source=target_source, schema="finance", name="regions")


def count_as(source: DataSource, role: str) -> int:
    conn = admin_connection(source.database)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            cur.execute(COUNT)
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def approved(requester: Any, approver: Any, ds: Dataset, name: str) -> Grant:
    """A request for a grant filtered by `name`, approved (its job queued)."""
    req = access_request_submit(
        requester=requester,
        dataset=ds,
        justification="regional reporting",
        duration=dt.timedelta(days=7),
        row_filter=ds.row_filters.get(name=name),
    )
    access_request_approve(access_request=req, approver=approver)
    return Grant.objects.get(source_request=req)


def failed_with(grant: Grant) -> str:
    wait_for(lambda: grant.jobs.filter(status=JobStatus.FAILED).exists())
    return str(grant.jobs.get(status=JobStatus.FAILED).last_error)


def filtered(requester: Any, approver: Any, ds: Dataset, name: str) -> Grant:
    """As `approved`, once the worker made it active."""
    grant = approved(requester, approver, ds, name)
    wait_for(lambda: Grant.objects.get(pk=grant.pk).status in (GrantStatus.ACTIVE, GrantStatus.FAILED))
    grant.refresh_from_db()
    assert grant.status == GrantStatus.ACTIVE, grant.jobs.values_list("last_error", flat=True)
    return grant


def test_an_eu_filter_counts_only_eu_rows_and_an_unfiltered_reader_keeps_every_row(
    target_source: DataSource, regions: Dataset, owner: Any, analyst: Any, make_user: Any
) -> None:
    reader = make_user("rfreader", REQUESTERS)
    before = approve_read(reader, owner, regions)  # unfiltered, before the table was under row filters
    reader_role = grant_principal(before).db_role
    assert count_as(target_source, reader_role) == 5

    row_filter_define(dataset=regions, name="EU only", expression="region = 'EU'", actor=owner)
    grant = filtered(analyst, owner, regions, "EU only")
    analyst_role = grant_principal(grant).db_role

    assert grant.row_filter_snapshot["compiled"] == "(\"region\" = 'EU')"
    assert count_as(target_source, analyst_role) == 3
    assert count_as(target_source, reader_role) == 5  # pass-through policy made when RLS was enabled
    later = approve_read(make_user("rflater", REQUESTERS), owner, regions)  # unfiltered, RLS already on
    assert count_as(target_source, grant_principal(later).db_role) == 5
    assert reconcile_source(source=target_source).clean

    # A hand-dropped policy: the grantee sees no row; the reconciler reports it and repairs it.
    package = next(iter(pkg for pkg in _policies(target_source) if pkg != "" and _qual(target_source, pkg) != "true"))
    run_sql(target_source, sql.SQL("DROP POLICY {} ON {}").format(sql.Identifier(package), TABLE), as_dba=True)
    assert count_as(target_source, analyst_role) == 0
    found = reconcile_source(source=target_source)
    assert not found.clean and any("does not exist" in line for line in found.row_policies)
    fixed = reconcile_source(source=target_source, fix=True)
    assert fixed.row_policies_fixed and fixed.clean
    assert count_as(target_source, analyst_role) == 3
    # A hand-edited one (all rows) is found too.
    run_sql(
        target_source, sql.SQL("ALTER POLICY {} ON {} USING (true)").format(sql.Identifier(package), TABLE), as_dba=True
    )
    assert any("instead of" in line for line in reconcile_source(source=target_source, fix=True).row_policies)
    assert count_as(target_source, analyst_role) == 3


def _policies(source: DataSource) -> list[str]:
    conn = admin_connection(source.database)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT policyname::text FROM pg_policies WHERE schemaname = 'finance' AND tablename = 'regions'"
            )
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def _qual(source: DataSource, policy: str) -> str:
    conn = admin_connection(source.database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT qual FROM pg_policies WHERE tablename = 'regions' AND policyname = %s", [policy])
            return str(cur.fetchone()[0])
    finally:
        conn.close()


def test_a_grantee_attribute_gives_two_grantees_different_rows_and_a_missing_one_is_refused(
    target_source: DataSource, regions: Dataset, owner: Any, make_user: Any, superuser: Any
) -> None:
    row_filter_define(dataset=regions, name="own tenant", expression="tenant_id = grantee.tenant", actor=owner)
    alice, bob, carol = (make_user(n, REQUESTERS) for n in ("rfalice", "rfbob", "rfcarol"))
    grantee_attributes_set(user=alice, values={"tenant": "a"}, actor=superuser)
    grantee_attributes_set(user=bob, values={"tenant": "b"}, actor=superuser)
    a, b = filtered(alice, owner, regions, "own tenant"), filtered(bob, owner, regions, "own tenant")
    assert count_as(target_source, grant_principal(a).db_role) == 2
    assert count_as(target_source, grant_principal(b).db_role) == 3
    # Two filtered grants of one grantee: the union of their rows (permissive policies are OR-ed).
    row_filter_define(dataset=regions, name="EU only", expression="region = 'EU'", actor=owner)
    filtered(bob, owner, regions, "EU only")
    assert count_as(target_source, grant_principal(b).db_role) == 5  # tenant b: 3, 4, 5; EU: 1, 2, 3
    with pytest.raises(InvalidInput, match=r"no value for attribute.*tenant") as refused:
        access_request_submit(
            requester=carol, dataset=regions, justification="x", row_filter=regions.row_filters.get(name="own tenant")
        )
    assert refused.value.field == "row_filter"


def test_a_hostile_column_name_round_trips_and_readers_the_portal_does_not_manage_are_named(
    target_source: DataSource, regions: Dataset, owner: Any, analyst: Any
) -> None:
    outsider = ROLE_PREFIX + "outsider"
    run_sql(target_source, sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(outsider)), as_dba=True)
    run_sql(target_source, sql.SQL("GRANT USAGE ON SCHEMA finance TO {}").format(sql.Identifier(outsider)), as_dba=True)
    run_sql(target_source, sql.SQL("GRANT SELECT ON {} TO {}").format(TABLE, sql.Identifier(outsider)), as_dba=True)
    row_filter_define(dataset=regions, name="x", expression='"Ré""gion x" = \'x\'', actor=owner)
    assert outsider in failed_with(approved(analyst, owner, regions, "x"))
    assert count_as(target_source, outsider) == 5  # RLS was not enabled behind its back

    from governance.services.row_filters import row_security_set

    row_security_set(dataset=regions, force=False, confirmed=[outsider], actor=owner)
    regions.refresh_from_db()
    again = filtered(analyst, owner, regions, "x")
    assert count_as(target_source, grant_principal(again).db_role) == 3
    assert count_as(target_source, outsider) == 0  # confirmed: it lost its rows, as the owner accepted


def _table_flags(source: DataSource) -> tuple[bool, bool]:
    conn = admin_connection(source.database)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'finance.regions'::regclass"
            )
            enabled, forced = cur.fetchone()
            return bool(enabled), bool(forced)
    finally:
        conn.close()


def test_force_binds_the_owner_and_revoking_the_last_member_drops_the_policy_but_keeps_rls(
    target_source: DataSource, regions: Dataset, owner: Any, analyst: Any
) -> None:
    from governance.services.grants import grant_revoke
    from governance.services.row_filters import row_security_set

    table_owner = ROLE_PREFIX + "tblowner"
    assert count_as(target_source, table_owner) == 5
    row_filter_define(dataset=regions, name="EU only", expression="region = 'EU'", actor=owner)
    row_security_set(dataset=regions, force=True, confirmed=[], actor=owner)
    regions.refresh_from_db()
    grant = filtered(analyst, owner, regions, "EU only")
    assert _table_flags(target_source) == (True, True)
    assert count_as(target_source, table_owner) == 0  # FORCE: the owner has no policy, so no row
    assert count_as(target_source, grant_principal(grant).db_role) == 3

    # RLS disabled behind the portal's back: found and enabled again by the repair.
    run_sql(target_source, sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(TABLE), as_dba=True)
    run_sql(target_source, sql.SQL("ALTER TABLE {} DISABLE ROW LEVEL SECURITY").format(TABLE), as_dba=True)
    found = reconcile_source(source=target_source, fix=True)
    assert any("not enabled" in line for line in found.row_policies)
    assert any("not forced" in line for line in found.row_policies)
    assert _table_flags(target_source)[0]

    grant_revoke(grant=grant, actor=owner, reason="done")
    wait_for(lambda: not grant.jobs.exclude(status__in=["succeeded", "failed"]).exists())
    assert _policies(target_source) == []  # the policy went with the package
    assert _table_flags(target_source)[0]  # RLS stays enabled (docs/privacy.md, "Revoke")
    assert count_as(target_source, table_owner) == 0


def test_without_the_tables_ownership_a_filtered_grant_fails_and_changes_nothing(
    target_source: DataSource, regions: Dataset, owner: Any, analyst: Any
) -> None:
    owner_role = sql.Identifier(ROLE_PREFIX + "tblowner")
    run_sql(
        target_source,
        sql.SQL("REVOKE {} FROM {}").format(owner_role, sql.Identifier(current().portal_role)),
        as_dba=True,
    )
    row_filter_define(dataset=regions, name="EU only", expression="region = 'EU'", actor=owner)
    grant = approved(analyst, owner, regions, "EU only")
    assert "must be owner" in failed_with(grant)
    wait_for(lambda: not grant.jobs.exclude(status__in=["succeeded", "failed"]).exists())
    assert _policies(target_source) == [] and _table_flags(target_source) == (False, False)
    assert count_as(target_source, ROLE_PREFIX + "tblowner") == 5
