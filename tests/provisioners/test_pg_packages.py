"""Access packages against a real PostgreSQL target: privileges held by one NOLOGIN role per
distinct (object, privileges), grantees made members; proved with real sessions of the grantees."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg2.extensions
import pytest
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from governance.provisioners import pg_packages as pgp
from governance.provisioners import postgres as pg
from tests import tls_target

from .conftest import HOSTILE, HOSTILE_COLUMN, RUN_PREFIX, SALES, Warehouse, as_role, can_run, converge, select

PG_VERSION = 150000
READ = pg.privileges_for_level("read", server_version_num=PG_VERSION)
WRITE = pg.privileges_for_level("write", server_version_num=PG_VERSION)


def package(wh: Warehouse, obj: pg.ObjectRef, privileges: pg.Privileges) -> pg.Package:
    return pgp.package(RUN_PREFIX, wh.name, obj, privileges)


def acl_grantees(wh: Warehouse, obj: pg.ObjectRef) -> list[str]:
    """Who has an entry in the table's ACL (owner and portal excluded), from relacl and attacl."""
    rows = wh.run(
        "SELECT DISTINCT r.rolname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_attribute att ON att.attrelid = c.oid AND att.attnum > 0,"
        " LATERAL (SELECT grantee FROM aclexplode(c.relacl) UNION SELECT grantee FROM aclexplode(att.attacl)) a"
        " JOIN pg_roles r ON r.oid = a.grantee"
        " WHERE n.nspname = %s AND c.relname = %s AND starts_with(r.rolname, %s) ORDER BY 1",
        (obj.schema, obj.name, RUN_PREFIX),
    )
    return [r[0] for r in rows]


def role_exists(wh: Warehouse, name: str) -> bool:
    return bool(wh.run("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s)", (name,))[0][0])


def test_names_are_deterministic_distinct_and_fit_postgres() -> None:
    long_table = pg.ObjectRef("s", "ü" * 31)  # 62 bytes
    a = pgp.package_name("gov_", "warehouse", SALES, READ)
    assert a == pgp.package_name("gov_", "warehouse", SALES, pg.Privileges(frozenset({"select"})))
    assert a.startswith("gov_p_customers_") and len(a.encode()) <= 63
    assert a != pgp.package_name("gov_", "warehouse", SALES, WRITE)
    assert a != pgp.package_name("gov_", "other_db", SALES, READ)  # roles are cluster-wide
    assert a != pgp.package_name("gov_", "warehouse", SALES, pg.privileges_for_level("read", ["id"]))
    # The example of docs/provisioning.md ("The path of one approval").
    example = pg.privileges_for_level("read", ["department", "employee_id", "hired_on", "salary"])
    assert pgp.package_name("gov_", "warehouse", pg.ObjectRef("hr", "employees"), example) == (
        "gov_p_employees_9fb3361270a9"
    )
    for obj in (long_table, HOSTILE):
        name = pgp.package_name("a_twenty_char_prefix", "warehouse", obj, READ)
        assert len(name.encode()) <= 63 and pg.display_name(name) == name  # plain [a-z0-9_]


def test_the_reconcilers_namer_names_exactly_as_package_name() -> None:
    objects = [SALES, HOSTILE, pg.ObjectRef("s", "ü" * 31), pg.ObjectRef('Sales "EU"\n\\', "t")]
    privileges = [
        READ,
        WRITE,
        pg.privileges_for_level("write", ["id", HOSTILE_COLUMN]),
        pg.Privileges(frozenset({"select"})),
    ]
    for prefix, database in (("gov_", "warehouse"), ("A Prefix-", 'db "x"é')):
        for privs in privileges:
            namer = pgp.package_namer(prefix, database, privs)
            assert [namer(obj) for obj in objects] == [pgp.package_name(prefix, database, o, privs) for o in objects]


def test_many_grantees_share_one_acl_entry_and_each_really_reads(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    pkg = package(warehouse, SALES, READ)
    people = [role_name("reader") for _ in range(3)]
    for person in people:
        desired = pg.Desired.through(person, SALES, [pkg])
        converge(conn, desired)
        assert pgp.verify(conn, desired) == []
    held = acl_grantees(warehouse, SALES)
    assert pkg.name in held and not set(people) & set(held)  # one entry, whoever the readers are
    for person in people:
        assert as_role(warehouse, person, "SELECT count(*) FROM sales.customers") == [(5,)]
        assert not can_run(warehouse, person, "DELETE FROM sales.customers")


def test_a_second_member_is_one_statement_on_the_target(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    pkg = package(warehouse, SALES, READ)
    first, second = role_name("first"), role_name("second")
    converge(conn, pg.Desired.through(first, SALES, [pkg]))
    warehouse.run(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(second)))
    result = converge(conn, pg.Desired.through(second, SALES, [pkg]))
    # The package exists with its privileges: only the membership runs.
    assert result.statements == (f'GRANT "{pkg.name}" TO "{second}"',)


class CountingCursor(psycopg2.extensions.cursor):
    """Counts round trips (every execute() is one)."""

    calls = 0

    def execute(self, query: Any, vars: Any = None) -> Any:
        CountingCursor.calls += 1
        return super().execute(query, vars)


def test_a_batch_into_an_existing_package_asks_its_guards_in_a_few_round_trips(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    """A batch's combined plan: 200 people join an existing package. Each GRANT that runs writes a
    membership, which no guard of the plan reads, so the answers asked ahead stand: the 403 guards
    take a handful of round trips, not one more after every GRANT (200+ before)."""
    obj = pg.ObjectRef("sales", role_name("batched"))  # a table of its own: no other test's members
    table = sql.Identifier(obj.schema, obj.name)
    warehouse.run(sql.SQL("CREATE TABLE {} (id integer)").format(table))
    warehouse.run(
        sql.SQL("GRANT ALL ON {} TO {} WITH GRANT OPTION").format(table, sql.Identifier(tls_target.PORTAL_ROLE))
    )
    pkg = package(warehouse, obj, READ)
    first = pg.Desired.through(role_name("first"), obj, [pkg])
    pg.apply(conn, pgp.plan_converge(first, managed_principal=True, database=warehouse.name), lock_key="t")
    prefix = role_name("batch")
    people = [f"{prefix}_{i}" for i in range(200)]
    warehouse.run(sql.SQL("; ").join(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(p)) for p in people))
    desireds = [pg.Desired.through(p, obj, [pkg]) for p in people]
    plan = pg.Plan.combine([pgp.plan_converge(d, managed_principal=True, database=warehouse.name) for d in desireds])
    conn.cursor_factory = CountingCursor
    CountingCursor.calls = 0
    result = pg.apply(conn, plan, lock_key="test:batch")
    assert result.statements == tuple(f'GRANT "{pkg.name}" TO "{p}"' for p in people)
    assert CountingCursor.calls <= 10, CountingCursor.calls
    assert all(found == [] for found in pgp.verify_many(conn, desireds))
    # A statement that does write what a later guard reads voids that answer: one person leaves the
    # package, and the package (no member left but `first`) stays; then `first` leaves too and the
    # drop's guard, asked again after the REVOKE, finds no member and drops it.
    leave = [pg.Desired.through(p, obj, [], [pkg.name]) for p in people]
    pg.apply(conn, pg.Plan.combine([pgp.plan_converge(d, managed_principal=True) for d in leave]), lock_key="t")
    assert role_exists(warehouse, pkg.name)
    last = pg.Desired.through(first.principal, obj, [], [pkg.name])
    pg.apply(conn, pgp.plan_converge(last, managed_principal=True, database=warehouse.name), lock_key="t")
    assert not role_exists(warehouse, pkg.name)


def test_guards_asked_together_answer_as_each_guard_asked_alone(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    """apply() asks the guards of one kind for many statements at once, in one query over arrays
    (planned once, not once per statement). Each answer must be the one its statement's own guard
    gives: packages in every state (exact, missing, created without privileges, with one privilege
    too many, by column), principals that hold privileges directly or not or do not exist, the
    schema's USAGE and the database's CONNECT, on ordinary and hostile names."""
    exact, legacy = role_name("exact"), role_name("legacy")
    converge(conn, pg.Desired.through(exact, SALES, [package(warehouse, SALES, READ)]))
    converge(conn, pg.Desired.union(legacy, SALES, READ))  # holds SELECT on SALES directly
    by_column = package(warehouse, HOSTILE, pg.privileges_for_level("read", ["id", HOSTILE_COLUMN]))
    converge(conn, pg.Desired.through(exact, HOSTILE, [by_column]))
    bare = package(warehouse, SALES, WRITE)  # created, holding nothing
    warehouse.run(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(bare.name)))
    extra = package(warehouse, HOSTILE, READ)  # its privileges and one more, granted by hand
    converge(conn, pg.Desired.through(role_name("other"), HOSTILE, [extra]))
    warehouse.run_as_portal(
        sql.SQL("GRANT INSERT ON {} TO {}").format(
            sql.Identifier(HOSTILE.schema, HOSTILE.name), sql.Identifier(extra.name)
        )
    )
    missing = package(warehouse, pg.ObjectRef(SALES.schema, "orders"), READ)
    desireds = [
        pg.Desired.through(p, obj, [pkg])
        for p in (exact, legacy, role_name("nobody"))
        for obj, pkg in ((SALES, package(warehouse, SALES, READ)), (HOSTILE, by_column), (SALES, bare),
                         (HOSTILE, extra), (missing.obj, missing))
    ]  # fmt: skip
    plans = [pgp.plan_converge(d, managed_principal=True, database=warehouse.name) for d in desireds]
    plans += [pg.plan_schema_usage(p, s, keep) for p in (exact, legacy) for s in (SALES.schema, HOSTILE.schema)
              for keep in (True, False)]  # fmt: skip
    guarded = [st for plan in plans for st in plan.statements if st.guard is not None]
    kinds = {st.asked.kind.name for st in guarded if st.asked is not None}
    assert kinds == {
        "role_missing", "package_acl_differs", "holds_directly", "connect_lacking", "usage_held", "usage_lacking",
    }  # fmt: skip
    query, read = pg.applying._ask_guards(guarded)
    with conn.cursor() as cur:
        cur.execute(query)
        together = read(cur.fetchone())
        alone = []
        for st in guarded:
            cur.execute(st.guard)
            alone.append(bool(cur.fetchone()[0]))
    conn.rollback()
    assert together == alone
    assert len(set(alone)) == 2  # both answers occur
    answer = dict(zip([st.line for st in guarded], alone, strict=True))
    assert not answer[pgp.package_statements(package(warehouse, SALES, READ))[1].line]  # exact: nothing to do
    assert answer[pgp.package_statements(extra)[1].line]  # one privilege too many: asserted again
    assert answer[pgp.package_statements(bare)[1].line] and answer[pgp.package_statements(missing)[1].line]


def test_a_batch_of_new_packages_takes_each_lock_once_and_asks_no_guard_twice_for_it(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    """One person on 30 new tables in two schemas: 30 new packages, each with its USAGE on a schema
    and CONNECT on the database. The schema locks are taken once, up front, and the database lock
    once: no statement that needs a lock already held asks its guard again after taking it. The
    combined plan creates the roles first, so the guards that read them are asked together after.
    The CREATE ROLEs share one savepoint ("already exists" is tolerated: test_postgres_apply.py)."""
    schemas = [role_name("sa"), role_name("sb")]
    objects = [pg.ObjectRef(s, f"t{i}") for s in schemas for i in range(15)]
    for s in schemas:
        warehouse.run(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(s)))
    for obj in objects:
        table = sql.Identifier(obj.schema, obj.name)
        warehouse.run(sql.SQL("CREATE TABLE {} (id integer)").format(table))
        warehouse.run(
            sql.SQL("GRANT ALL ON {} TO {} WITH GRANT OPTION").format(table, sql.Identifier(tls_target.PORTAL_ROLE))
        )
    for s in schemas:
        warehouse.run(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {} WITH GRANT OPTION").format(
                sql.Identifier(s), sql.Identifier(tls_target.PORTAL_ROLE)
            )
        )
    person = role_name("many")
    warehouse.run(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(person)))
    desireds = [pg.Desired.through(person, obj, [package(warehouse, obj, READ)]) for obj in objects]
    plan = pg.Plan.combine([pgp.plan_converge(d, managed_principal=True, database=warehouse.name) for d in desireds])
    conn.cursor_factory = CountingCursor
    CountingCursor.calls = 0
    pg.apply(conn, plan, lock_key="test:new-packages")
    # The 30 CREATE ROLEs first, in one savepoint, then the rest: guard windows, the database lock
    # and the COMMIT (7 round trips; 152 before the locks held, the roles first and together).
    assert CountingCursor.calls <= 8, CountingCursor.calls
    assert all(found == [] for found in pgp.verify_many(conn, desireds))
    for obj in objects:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(obj.schema, obj.name))
        assert as_role(warehouse, person, query) == [(0,)]


def test_old_direct_grant_is_converted_in_one_transaction_without_losing_access(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    person = role_name("legacy")
    converge(conn, pg.Desired.union(person, SALES, READ))  # the one-role-per-grant scheme
    assert person in acl_grantees(warehouse, SALES)

    pkg = package(warehouse, SALES, READ)
    desired = pg.Desired.through(person, SALES, [pkg])
    result = converge(conn, desired)

    assert f'GRANT "{pkg.name}" TO "{person}"' in result.statements
    assert f'REVOKE ALL ON TABLE "sales"."customers" FROM "{person}"' in " ".join(result.statements)
    assert pgp.verify(conn, desired) == []
    assert person not in acl_grantees(warehouse, SALES) and pkg.name in acl_grantees(warehouse, SALES)
    assert as_role(warehouse, person, "SELECT count(*) FROM sales.customers") == [(5,)]


def test_leaving_the_last_member_drops_the_package_and_access_goes(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    pkg = package(warehouse, SALES, WRITE)
    a, b = role_name("writer"), role_name("writer")
    for person in (a, b):
        converge(conn, pg.Desired.through(person, SALES, [pkg]))

    leave_a = pg.Desired.through(a, SALES, [], [pkg.name])
    converge(conn, leave_a)
    assert pgp.verify(conn, leave_a) == []
    assert not can_run(warehouse, a, "SELECT 1 FROM sales.customers")
    assert can_run(warehouse, b, "SELECT 1 FROM sales.customers")
    assert role_exists(warehouse, pkg.name)  # b still holds it

    converge(conn, pg.Desired.through(b, SALES, [], [pkg.name]))
    assert not can_run(warehouse, b, "SELECT 1 FROM sales.customers")
    assert not role_exists(warehouse, pkg.name)
    assert pkg.name not in acl_grantees(warehouse, SALES)


def test_moving_between_packages_keeps_what_both_give(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    person = role_name("mover")
    read, write = package(warehouse, SALES, READ), package(warehouse, SALES, WRITE)
    converge(conn, pg.Desired.through(person, SALES, [write]))
    desired = pg.Desired.through(person, SALES, [read], [write.name])
    converge(conn, desired)
    assert pgp.verify(conn, desired) == []
    assert can_run(warehouse, person, "SELECT 1 FROM sales.customers")
    assert not can_run(warehouse, person, "DELETE FROM sales.customers")
    assert not role_exists(warehouse, write.name)


def test_a_package_edited_by_hand_is_reported_and_the_next_converge_restores_it(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    person = role_name("reader")
    pkg = package(warehouse, SALES, READ)
    desired = pg.Desired.through(person, SALES, [pkg])
    converge(conn, desired)
    warehouse.run_as_portal(sql.SQL("GRANT DELETE ON sales.customers TO {}").format(sql.Identifier(pkg.name)))
    assert pgp.verify(conn, desired) == [f"unexpected DELETE on sales.customers for {pkg.name}"]
    assert can_run(warehouse, person, "DELETE FROM sales.customers WHERE false")

    converge(conn, desired)
    assert pgp.verify(conn, desired) == []
    assert not can_run(warehouse, person, "DELETE FROM sales.customers WHERE false")


def test_verification_proves_the_member_really_inherits(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    login = role_name("noinherit")
    warehouse.run(sql.SQL("CREATE ROLE {} NOLOGIN NOINHERIT").format(sql.Identifier(login)))
    desired = pg.Desired.through(login, SALES, [package(warehouse, SALES, READ)])
    converge(conn, desired, managed=False)
    problems = pgp.verify(conn, desired)
    assert len(problems) == 1 and "does not inherit its privileges (NOINHERIT)" in problems[0]


def test_hostile_names_and_column_packages(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    person = role_name("hostile")
    privs = pg.privileges_for_level("read", ["id", HOSTILE_COLUMN])
    desired = pg.Desired.through(person, HOSTILE, [package(warehouse, HOSTILE, privs)])
    converge(conn, desired)
    assert pgp.verify(conn, desired) == []
    assert sorted(as_role(warehouse, person, select(("id", HOSTILE_COLUMN), HOSTILE))) == [(1, "4111"), (2, "5500")]
    assert not can_run(warehouse, person, select("*", HOSTILE))


@pytest.mark.slow
def test_the_acl_stays_bounded_with_thousands_of_grantees(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    """3,000 grantees on one table: more than the ~2,400 direct entries after which PostgreSQL
    refuses every further GRANT ("row is too big"); in groups of 500, as the engine runs a batch,
    verified in one pass."""
    obj = pg.ObjectRef("sales", role_name("popular"))  # a table of its own: no other test's grantees
    warehouse.run(sql.SQL("CREATE TABLE {} (id integer)").format(sql.Identifier(obj.schema, obj.name)))
    warehouse.run(
        sql.SQL("GRANT ALL ON {} TO {} WITH GRANT OPTION").format(
            sql.Identifier(obj.schema, obj.name), sql.Identifier(tls_target.PORTAL_ROLE)
        )
    )
    pkg = package(warehouse, obj, READ)
    prefix = role_name("many")
    people = [f"{prefix}_{i}" for i in range(3000)]
    for start in range(0, len(people), 500):  # the grantees' roles, 500 per round trip
        creates = [sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(p)) for p in people[start : start + 500]]
        warehouse.run(sql.SQL("; ").join(creates))
    desireds = [pg.Desired.through(p, obj, [pkg]) for p in people]
    for start in range(0, len(desireds), 500):
        plan = pg.Plan.combine(
            [
                pgp.plan_converge(d, managed_principal=True, database=warehouse.name)
                for d in desireds[start : start + 500]
            ]
        )
        pg.apply(conn, plan, lock_key="test:popular")
    assert all(found == [] for found in pgp.verify_many(conn, desireds))
    table = sql.Identifier(obj.schema, obj.name)
    rows = warehouse.run("SELECT cardinality(relacl) FROM pg_class WHERE oid = %s::regclass", (pg.render(table),))
    assert rows[0][0] == 3  # owner, the portal's grant option, the package: not 3,000
    # The database's ACL likewise: CONNECT is the package's, which its members inherit.
    connects = warehouse.run(
        "SELECT count(*) FILTER (WHERE starts_with(r.rolname, %s)), bool_or(r.rolname = %s)"
        " FROM pg_database d, aclexplode(d.datacl) a JOIN pg_roles r ON r.oid = a.grantee"
        " WHERE d.datname = current_database() AND a.privilege_type = 'CONNECT'",
        (prefix, pkg.name),
    )
    assert connects[0] == (0, True)
    assert can_run(warehouse, people[-1], sql.SQL("SELECT * FROM {}").format(table))
