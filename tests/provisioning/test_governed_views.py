"""Governed views on the real TLS target, as the least-privileged portal role: a masked column
seen masked, a pseudonymised id that joins across two tables while the raw value never appears, the
key out of the grantee's reach, a hand edit found and repaired, hostile column names."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from psycopg2 import sql

from governance import provisioning
from governance.models import DataSource
from governance.provisioners import pg_packages as pgp
from governance.provisioners import pg_views as pgv
from governance.provisioners import postgres as pg
from tests import tls_target
from tests.provisioning.conftest import ROLE_PREFIX, admin_connection, dba, drop_test_roles, target_can

pytestmark = [pytest.mark.django_db(transaction=True)]

SCHEMA = "Shop ÆØ"  # mixed case, space and unicode
HOSTILE = 'e"mail ✉'  # a quote, a space and unicode in one column name
KEY = bytes.fromhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")


@pytest.fixture
def shop(target_source: DataSource) -> Iterator[DataSource]:
    """Two tables sharing a customer id, one with a hostile email column; the portal's role may
    create the governed schema (docs/provisioning.md asks the DBA for CREATE on the database)."""
    db = target_source.database
    s = sql.Identifier(SCHEMA)
    dba(
        db,
        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(s),
        sql.SQL("DROP SCHEMA IF EXISTS portal_governed CASCADE"),
        sql.SQL("CREATE SCHEMA {}").format(s),
        sql.SQL(
            "CREATE TABLE {} (customer_id int, {} text, full_name text, phone text, born date, score int,"
            " card text, born_text text)"
        ).format(sql.Identifier(SCHEMA, "customers"), sql.Identifier(HOSTILE)),
        sql.SQL(
            "INSERT INTO {} VALUES (4711, 'ada@example.com', 'Ada Lovelace', '+44 20 7946 0958', '1815-12-10', 7,"
            " '4111 1111 1111 1234', 'born 10/12/1815'),"
            " (4712, NULL, NULL, NULL, NULL, 3, NULL, NULL)"
        ).format(sql.Identifier(SCHEMA, "customers")),
        sql.SQL("CREATE TABLE {} (order_id int, customer_id int, amount numeric)").format(
            sql.Identifier(SCHEMA, "orders")
        ),
        sql.SQL("INSERT INTO {} VALUES (1, 4711, 9.5), (2, 4711, 3), (3, 4712, 1)").format(
            sql.Identifier(SCHEMA, "orders")
        ),
    )
    conn = admin_connection(db)
    with conn.cursor() as cur:
        tls_target.grant_schema(cur, SCHEMA, tls_target.PORTAL_ROLE)
        cur.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(db), sql.Identifier(tls_target.PORTAL_ROLE)
            )
        )
    conn.close()
    yield target_source
    drop_test_roles(db)
    dba(
        db,
        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(s),
        sql.SQL("DROP SCHEMA IF EXISTS portal_governed CASCADE"),
    )


def view_of(source: DataSource, table: str, columns: list[pgv.ViewColumn]) -> pgv.GovernedView:
    return pgv.governed_view(
        pg.ObjectRef(SCHEMA, table),
        columns,
        schema=pgv.DEFAULT_SCHEMA,
        role_prefix=source.role_prefix,
        database=source.database,
        pads=pgv.pseudonym_pads(KEY),
    )


def converge(source: DataSource, principal: str, view: pgv.GovernedView) -> tuple[pg.Desired, pg.ApplyResult]:
    pkg = pgp.package(source.role_prefix, source.database, view.view, pg.privileges_for_level("read", None))
    pkg = pg.Package(pkg.name, pkg.obj, pkg.privileges, view)
    desired = pg.Desired.through(principal, view.base, [pkg])
    plan = pgp.plan_converge(desired, managed_principal=True, database=source.database)
    conn = pg.connect(provisioning.target_for(source))
    try:
        result = pg.apply(conn, plan, lock_key="test")
        assert pgp.verify(conn, desired) == []
        assert pgv.verify_views(conn, [view]) == [[]]
    finally:
        conn.close()
    return desired, result


def as_role(source: DataSource, role: str, query: sql.Composable | str) -> list[tuple[Any, ...]]:
    conn = admin_connection(source.database)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            cur.execute(query)
            return list(cur.fetchall())
    finally:
        conn.close()


def denied(source: DataSource, role: str, query: sql.Composable | str) -> bool:
    return not target_can(source.database, role, query)


def customers_view(source: DataSource) -> pgv.GovernedView:
    return view_of(
        source,
        "customers",
        [
            pgv.ViewColumn("customer_id", pgv.OTHER, pgv.PSEUDONYMISED, "national_id"),
            pgv.ViewColumn(HOSTILE, pgv.TEXT, pgv.MASKED, "email"),
            pgv.ViewColumn("full_name", pgv.TEXT, pgv.MASKED, "person_name"),
            pgv.ViewColumn("phone", pgv.TEXT, pgv.MASKED, "phone"),
            pgv.ViewColumn("born", pgv.DATE, pgv.MASKED, "date_of_birth"),
            pgv.ViewColumn("score", pgv.OTHER, pgv.NULLED, "phi"),
            pgv.ViewColumn("card", pgv.TEXT, pgv.MASKED, "card_number"),
            pgv.ViewColumn("born_text", pgv.TEXT, pgv.MASKED, "date_of_birth"),
        ],
    )


def test_a_masked_grant_sees_masked_values_and_cannot_read_the_base_table(shop: DataSource) -> None:
    principal = f"{ROLE_PREFIX}u_masked_{secrets.token_hex(2)}"
    view = customers_view(shop)
    _, result = converge(shop, principal, view)
    ipad, opad = pgv.pseudonym_pads(KEY)
    assert any("[REDACTED]" in line for line in result.statements)  # the key is in no job record
    assert not any(ipad in line or opad in line for line in result.statements)
    rows = as_role(
        shop,
        principal,
        sql.SQL("SELECT {}, full_name, phone, born, score, pg_typeof(born)::text, card, born_text FROM {}").format(
            sql.Identifier(HOSTILE), sql.Identifier(view.view.schema, view.view.name)
        ),
    )
    by_mail = sorted(rows, key=lambda r: r[0] is None)
    assert by_mail[0][:3] == ("a***@example.com", "A. L.", "***0958")
    assert str(by_mail[0][3]) == "1815-01-01" and by_mail[0][4] is None and by_mail[0][5] == "date"
    assert by_mail[0][6:] == ("***1234", "1815")
    assert by_mail[1][:5] == (None, None, None, None, None)  # NULL stays NULL, never '***'
    assert denied(shop, principal, sql.SQL("SELECT 1 FROM {}").format(sql.Identifier(SCHEMA, "customers")))


def test_pseudonyms_join_across_two_tables_and_the_raw_id_never_appears(shop: DataSource) -> None:
    principal = f"{ROLE_PREFIX}u_pseudo_{secrets.token_hex(2)}"
    customers = customers_view(shop)
    orders = view_of(
        shop,
        "orders",
        [
            pgv.ViewColumn("order_id", pgv.OTHER),
            pgv.ViewColumn("customer_id", pgv.OTHER, pgv.PSEUDONYMISED, "national_id"),
            pgv.ViewColumn("amount", pgv.OTHER),
        ],
    )
    converge(shop, principal, customers)
    converge(shop, principal, orders)
    joined = as_role(
        shop,
        principal,
        sql.SQL(
            "SELECT c.customer_id, count(*), sum(o.amount) FROM {} c JOIN {} o USING (customer_id)"
            " GROUP BY 1 ORDER BY 2 DESC"
        ).format(
            sql.Identifier(customers.view.schema, customers.view.name),
            sql.Identifier(orders.view.schema, orders.view.name),
        ),
    )
    assert [(n, float(total)) for _, n, total in joined] == [(2, 12.5), (1, 1.0)]
    assert joined[0][0] == pgv.pseudonym(KEY, "4711")  # keyed HMAC-SHA256 of the value's text
    everything = as_role(
        shop,
        principal,
        sql.SQL("SELECT o::text FROM {} o").format(sql.Identifier(orders.view.schema, orders.view.name)),
    )
    assert everything and not any("4711" in row[0] or "4712" in row[0] for row in everything)


def test_the_grantee_cannot_read_the_key_and_the_view_definition_does_not_reveal_it(shop: DataSource) -> None:
    principal = f"{ROLE_PREFIX}u_key_{secrets.token_hex(2)}"
    view = customers_view(shop)
    converge(shop, principal, view)
    key_table = sql.Identifier(pgv.DEFAULT_SCHEMA, pgv.KEY_TABLE)
    assert denied(shop, principal, sql.SQL("SELECT * FROM {}").format(key_table))
    [(definition,)] = as_role(
        shop,
        principal,
        sql.SQL("SELECT pg_get_viewdef({}::regclass)").format(
            sql.Literal(f'"{pgv.DEFAULT_SCHEMA}"."{view.view.name}"')
        ),
    )
    ipad, opad = pgv.pseudonym_pads(KEY)
    assert pgv.KEY_TABLE in definition
    assert KEY.hex() not in definition and ipad not in definition and opad not in definition


def test_a_hand_edit_of_the_view_is_found_and_repaired(shop: DataSource) -> None:
    principal = f"{ROLE_PREFIX}u_edit_{secrets.token_hex(2)}"
    view = customers_view(shop)
    converge(shop, principal, view)
    target = sql.Identifier(view.view.schema, view.view.name)
    # A DBA "fixes" the view: the raw email comes back, the column keeps its name.
    dba(
        shop.database,
        sql.SQL(
            "CREATE OR REPLACE VIEW {} WITH (security_barrier) AS"
            " SELECT customer_id::text AS customer_id, {} , full_name,"
            " phone, born, score, card, born_text FROM {}"
        ).format(target, sql.Identifier(HOSTILE), sql.Identifier(SCHEMA, "customers")),
    )
    conn = pg.connect(provisioning.target_for(shop))
    try:
        [problems] = pgv.verify_views(conn, [view])
        assert problems and "differs from its definition" in problems[0]
    finally:
        conn.close()
    converge(shop, principal, view)  # the converge re-creates it (and verifies)
    rows = as_role(shop, principal, sql.SQL("SELECT {} FROM {}").format(sql.Identifier(HOSTILE), target))
    assert "ada@example.com" not in {r[0] for r in rows} and "a***@example.com" in {r[0] for r in rows}


# --- through the engine: request, approval, the real worker, revocation, reconcile ---------------


@pytest.fixture
def customers(target_source: DataSource) -> Iterator[Any]:
    """ "Sales EU".customers with its email tagged as PII; the portal may create its governed schema."""
    from governance.models import ColumnTag, Dataset, TagStatus

    db = target_source.database
    dba(db, sql.SQL("DROP SCHEMA IF EXISTS portal_governed CASCADE"))
    dba(
        db,
        sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(db), sql.Identifier(tls_target.PORTAL_ROLE)),
    )
    ds = Dataset.objects.get(source=target_source, schema="Sales EU", name="customers")
    # The sync suggested it; an owner confirmed it.
    ColumnTag.objects.update_or_create(
        column=ds.columns.get(name="email"), tag="email", defaults={"status": TagStatus.CONFIRMED}
    )
    yield ds
    drop_test_roles(db)
    dba(db, sql.SQL("DROP SCHEMA IF EXISTS portal_governed CASCADE"))


def request_treated(
    requester: Any,
    approver: Any,
    ds: Any,
    treatments: dict[str, str],
    columns: Sequence[str] = ("id", "email", "country"),
) -> Any:
    """A treated request approved and provisioned by the worker (`columns` empty: the whole table)."""
    from governance.models import Grant, GrantStatus
    from governance.services.requests import access_request_approve, access_request_submit
    from tests.provisioning.conftest import wait_for

    req = access_request_submit(
        requester=requester,
        dataset=ds,
        columns=list(ds.columns.filter(name__in=columns)),
        justification="churn by country",
        duration=dt.timedelta(days=7),
        treatments=treatments,
    )
    access_request_approve(access_request=req, approver=approver)
    grant = Grant.objects.get(source_request=req)
    wait_for(lambda: Grant.objects.get(pk=grant.pk).status in (GrantStatus.ACTIVE, GrantStatus.FAILED), timeout=30)
    grant.refresh_from_db()
    assert grant.status == GrantStatus.ACTIVE, grant.jobs.values_list("last_error", flat=True)
    return grant


@pytest.mark.usefixtures("celery_worker")
def test_a_masked_grant_through_the_engine_is_seen_masked_verified_revoked_and_its_view_dropped(
    customers: Any, analyst: Any, owner: Any
) -> None:
    from governance.models import ProvisioningJob
    from governance.provisioning import grant_principal, package_of
    from governance.selectors.plans import plan_preview
    from governance.services.reconcile import reconcile_source
    from tests.provisioning.test_packages import revoke
    from tests.provisioning.test_reconcile import role_exists

    grant = request_treated(analyst, owner, customers, {"email": "masked"})
    assert grant.treatments == {"email": "masked"}
    role = grant_principal(grant).db_role
    pkg = package_of(customers, "read", grant.columns, grant.treatments)
    assert pkg.view is not None
    view = sql.Identifier(pkg.obj.schema, pkg.obj.name)
    rows = as_role(customers.source, role, sql.SQL("SELECT id, email, country FROM {}").format(view))
    assert rows == [(1, "a***@example.com", "UK")]
    assert denied(customers.source, role, 'SELECT email FROM "Sales EU".customers')
    lines = plan_preview(grant)
    assert any(line.startswith("CREATE VIEW") or "CREATE VIEW" in line for line in lines)
    assert any("'***@'" in line for line in lines)  # the approver sees the mask itself
    job = ProvisioningJob.objects.filter(grant=grant).latest("pk")
    assert not any("ada@example.com" in line for line in job.statements)
    found = reconcile_source(source=customers.source)
    assert found.clean, found.drift

    revoke(grant, owner)
    assert denied(customers.source, role, sql.SQL("SELECT 1 FROM {}").format(view))
    assert not role_exists(customers.source, pkg.name)
    conn = admin_connection(customers.source.database)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", [f'"{pkg.obj.schema}"."{pkg.obj.name}"'])
        gone = cur.fetchone()[0] is None
    jobs = [(j.action, j.statements) for j in ProvisioningJob.objects.filter(grant=grant).order_by("pk")]
    assert gone, jobs  # the view went with its last package
    conn.close()


@pytest.mark.usefixtures("celery_worker")
def test_reconcile_reports_a_hand_edited_view_and_repairs_it(customers: Any, analyst: Any, owner: Any) -> None:
    from governance.models import DriftFinding, DriftKind
    from governance.provisioning import grant_principal, package_of
    from governance.services.reconcile import reconcile_source

    grant = request_treated(analyst, owner, customers, {"email": "pseudonymised"})
    role = grant_principal(grant).db_role
    pkg = package_of(customers, "read", grant.columns, grant.treatments)
    view = sql.Identifier(pkg.obj.schema, pkg.obj.name)
    [(token,)] = as_role(customers.source, role, sql.SQL("SELECT email FROM {}").format(view))
    assert len(token) == 64 and "@" not in token
    # A DBA puts the raw email back, keeping the view's name, columns and comment.
    dba(
        customers.source.database,
        sql.SQL("CREATE OR REPLACE VIEW {} AS SELECT id, email, country FROM {}").format(
            view, sql.Identifier("Sales EU", "customers")
        ),
    )
    assert as_role(customers.source, role, sql.SQL("SELECT email FROM {}").format(view)) == [("ada@example.com",)]

    found = reconcile_source(source=customers.source)
    assert [d.kind for d in found.drift] == [DriftKind.VIEW_DIFFERS], found.drift
    assert "differs from its definition" in found.drift[0].detail and found.drift[0].principal == role
    assert DriftFinding.objects.open().filter(kind=DriftKind.VIEW_DIFFERS, principal=role).count() == 1

    repaired = reconcile_source(source=customers.source, fix=True)
    assert repaired.fixed == 1 and not repaired.errors, repaired.errors
    assert as_role(customers.source, role, sql.SQL("SELECT email FROM {}").format(view)) == [(token,)]
    assert not DriftFinding.objects.open().exists()
    assert reconcile_source(source=customers.source).clean
