"""Access packages through the whole engine: approvals by the real worker, revocations, the plan an
approver sees, and the reconciler converting the old scheme and repairing packages."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg2 import sql

from accounts.roles import REQUESTERS
from governance.models import Dataset, DataSource, DriftKind, Grant, GrantStatus
from governance.provisioning import grant_principal, package_of
from governance.selectors.plans import plan_preview
from governance.services.grants import grant_revoke
from governance.services.reconcile import reconcile_source
from tests.provisioning.conftest import target_can, wait_for
from tests.provisioning.test_reconcile import LEDGER, approve_read, clean_target, role_exists, run_sql

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker", "clean_target")]
__all__ = ["clean_target"]  # the autouse fixture of test_reconcile: every test starts from clean roles


def ledger(source: DataSource) -> Dataset:
    return Dataset.objects.get(source=source, schema="finance", name="ledger")


def acl_grantees(source: DataSource) -> set[str]:
    """The roles with an entry in finance.ledger's table or column ACLs (owner and portal left out)."""
    from tests.provisioning.conftest import admin_connection

    conn = admin_connection(source.database)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT DISTINCT r.rolname::text FROM pg_class c"
                " LEFT JOIN pg_attribute att ON att.attrelid = c.oid AND att.attnum > 0,"
                " LATERAL (SELECT grantee FROM aclexplode(c.relacl) UNION SELECT grantee FROM aclexplode(att.attacl)) a"
                " JOIN pg_roles r ON r.oid = a.grantee"
                " WHERE c.oid = 'finance.ledger'::regclass AND starts_with(r.rolname, %s)",
                [source.role_prefix],
            )
            return {r[0] for r in cur.fetchall()}
    finally:
        conn.close()


def revoke(grant: Grant, actor: Any) -> None:
    grant_revoke(grant=grant, actor=actor, reason="no longer needed")
    wait_for(lambda: not grant.jobs.exclude(status__in=["succeeded", "failed"]).exists())


def test_readers_of_one_table_share_one_package_and_the_last_one_out_drops_it(
    target_source: DataSource, owner: Any, make_user: Any
) -> None:
    ds = ledger(target_source)
    people = [make_user(f"pkreader{i}", REQUESTERS) for i in range(3)]
    grants = [approve_read(person, owner, ds) for person in people]
    roles = [grant_principal(g).db_role for g in grants]
    package = package_of(ds, "read", []).name

    assert acl_grantees(target_source) == {package}  # one entry, not one per reader
    assert all(target_can(target_source.database, role, LEDGER) for role in roles)
    assert all(g.verified_at is not None for g in Grant.objects.filter(pk__in=[g.pk for g in grants]))

    revoke(grants[0], owner)
    assert not target_can(target_source.database, roles[0], LEDGER)
    assert target_can(target_source.database, roles[1], LEDGER) and role_exists(target_source, package)

    for grant in grants[1:]:
        revoke(grant, owner)
    assert not any(target_can(target_source.database, role, LEDGER) for role in roles)
    assert not role_exists(target_source, package) and acl_grantees(target_source) == set()
    assert reconcile_source(source=target_source).clean


def test_the_approver_sees_the_membership_and_the_package_privileges(
    target_source: DataSource, owner: Any, analyst: Any
) -> None:
    grant = approve_read(analyst, owner, ledger(target_source))
    role = grant_principal(grant).db_role
    package = package_of(grant.dataset, "read", []).name
    lines = plan_preview(grant)
    assert f'CREATE ROLE "{package}" NOLOGIN  -- only if role {package} does not exist' in lines
    privileges = next(line for line in lines if line.startswith("GRANT USAGE"))
    assert f'GRANT SELECT ON TABLE "finance"."ledger" TO "{package}"' in privileges
    assert privileges.endswith(f"-- only if package {package} does not hold exactly these privileges yet")
    assert f'GRANT "{package}" TO "{role}"' in lines
    grant.refresh_from_db()
    assert grant.status == GrantStatus.ACTIVE


def test_grants_of_the_old_scheme_are_reported_and_converted_without_a_gap(
    target_source: DataSource, owner: Any, analyst: Any
) -> None:
    grant = approve_read(analyst, owner, ledger(target_source))
    role = grant_principal(grant).db_role
    package = package_of(grant.dataset, "read", []).name
    # How a grant made before access packages looks on the target: SELECT held by the role itself.
    run_sql(target_source, sql.SQL("GRANT SELECT ON finance.ledger TO {}").format(sql.Identifier(role)))
    run_sql(target_source, sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(package), sql.Identifier(role)))

    result = reconcile_source(source=target_source)
    assert [(d.kind, d.principal, d.privilege) for d in result.drift] == [(DriftKind.DIRECT, role, "SELECT")]
    assert result.lines() == [f"SELECT on finance.ledger held directly by {role}, not through its access package"]

    result = reconcile_source(source=target_source, fix=True)
    assert result.clean and result.fixed == 1
    assert role not in acl_grantees(target_source) and package in acl_grantees(target_source)
    assert target_can(target_source.database, role, LEDGER)
    assert reconcile_source(source=target_source).clean


def test_a_package_changed_by_hand_is_found_on_it_and_its_members_and_restored(
    target_source: DataSource, owner: Any, analyst: Any
) -> None:
    grant = approve_read(analyst, owner, ledger(target_source))
    role = grant_principal(grant).db_role
    package = package_of(grant.dataset, "read", []).name
    run_sql(target_source, sql.SQL("GRANT DELETE ON finance.ledger TO {}").format(sql.Identifier(package)))

    result = reconcile_source(source=target_source)
    assert sorted(result.lines()) == sorted(
        [f"unexpected DELETE on finance.ledger for {package}", f"unexpected DELETE on finance.ledger for {role}"]
    )
    result = reconcile_source(source=target_source, fix=True)
    assert result.clean
    assert not target_can(target_source.database, role, "DELETE FROM finance.ledger WHERE false")
    assert target_can(target_source.database, role, LEDGER)


def test_a_package_nobody_defines_is_an_orphan_and_is_dropped(target_source: DataSource) -> None:
    name = f"{target_source.role_prefix}p_forgotten_0123456789ab"
    run_sql(target_source, sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
    run_sql(target_source, sql.SQL("GRANT USAGE ON SCHEMA finance TO {}").format(sql.Identifier(name)))
    run_sql(target_source, sql.SQL("GRANT SELECT ON finance.ledger TO {}").format(sql.Identifier(name)))

    result = reconcile_source(source=target_source)
    assert [(d.kind, d.principal) for d in result.drift] == [(DriftKind.ORPHAN_PACKAGE, name)]
    result = reconcile_source(source=target_source, fix=True)
    assert result.clean and result.fixed == 1, result.errors
    assert not role_exists(target_source, name)
