"""Apply and verify against a real PostgreSQL target, proved with real sessions of the principal.

"Can the role read it?" is always answered by PostgreSQL itself: a session does SET ROLE to the
principal (what a login that is a member of it gets) and runs the SELECT.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import psycopg2
import psycopg2.errors
import pytest
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from governance.provisioners import postgres as pg

from .conftest import (
    CUSTOMER_COLUMNS,
    HOSTILE,
    HOSTILE_COLUMN,
    PERCENT_COLUMN,
    PII_COLUMNS,
    SALES,
    Warehouse,
    admin_connection,
    as_role,
    can_run,
    converge,
    select,
    server_params,
    target_for,
)

PG_VERSION = 150000
READ = pg.privileges_for_level("read", server_version_num=PG_VERSION)
WRITE = pg.privileges_for_level("write", server_version_num=PG_VERSION)
NON_PII = tuple(c for c in CUSTOMER_COLUMNS if c not in PII_COLUMNS)


def test_read_grant_lets_the_role_select_and_converging_to_nothing_takes_it_away(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    analyst = role_name("analyst")
    desired = pg.Desired.union(analyst, SALES, READ)

    result = converge(conn, desired)

    assert result.skipped == ()  # new role: created, USAGE granted, table granted
    assert result.statements[0].startswith("CREATE ROLE")
    assert "pg_advisory_xact_lock" in result.preamble and result.elapsed_ms > 0
    assert pg.verify(conn, desired) == []
    assert as_role(warehouse, analyst, "SELECT count(*) FROM sales.customers") == [(5,)]
    assert not can_run(warehouse, analyst, "INSERT INTO sales.customers (id) VALUES (100)")
    assert not can_run(warehouse, analyst, "SELECT * FROM sales.orders")

    nothing = pg.Desired.union(analyst, SALES)
    converge(conn, nothing)
    assert pg.verify(conn, nothing) == []
    assert not can_run(warehouse, analyst, "SELECT count(*) FROM sales.customers")
    # USAGE on the schema stays until the caller says the principal has nothing left there.
    assert pg.verify_schema_usage(conn, analyst, "sales", present=True) == []
    pg.apply(conn, pg.plan_schema_usage(analyst, "sales", keep=False), lock_key="test:schema")
    assert pg.verify_schema_usage(conn, analyst, "sales", present=False) == []
    again = pg.apply(conn, pg.plan_schema_usage(analyst, "sales", keep=False), lock_key="test:schema")
    assert again.statements == () and len(again.skipped) == 1


def test_column_list_grants_only_the_listed_columns(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    analyst = role_name("analyst")
    desired = pg.Desired.union(analyst, SALES, pg.privileges_for_level("read", NON_PII, server_version_num=PG_VERSION))

    converge(conn, desired)

    assert pg.verify(conn, desired) == []
    assert as_role(warehouse, analyst, select(NON_PII, SALES))[0] == (1, "Person 1", "FR")
    assert not can_run(warehouse, analyst, select("*", SALES))
    for pii in PII_COLUMNS:
        assert not can_run(warehouse, analyst, select((pii,), SALES))
    assert as_role(warehouse, analyst, "SELECT count(*) FROM sales.customers") == [(5,)]


def test_write_with_columns_has_no_delete(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    writer = role_name("writer")
    desired = pg.Desired.union(writer, SALES, pg.privileges_for_level("write", NON_PII, server_version_num=PG_VERSION))

    converge(conn, desired)

    assert pg.verify(conn, desired) == []
    assert can_run(warehouse, writer, "UPDATE sales.customers SET country = 'DE' WHERE id = 1")
    assert can_run(warehouse, writer, "INSERT INTO sales.customers (id, name) VALUES (99, 'x')")
    assert not can_run(warehouse, writer, "UPDATE sales.customers SET email = 'x' WHERE id = 1")
    assert not can_run(warehouse, writer, "DELETE FROM sales.customers WHERE id = 1")


def test_applying_twice_is_idempotent(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    analyst = role_name("analyst")
    desired = pg.Desired.union(
        analyst, SALES, WRITE, pg.privileges_for_level("read", ("email",), server_version_num=PG_VERSION)
    )
    plan = pg.plan_converge(desired, managed_principal=True)

    first = pg.apply(conn, plan, lock_key="test:idem")
    acl_after_first = warehouse.acl(SALES)
    second = pg.apply(conn, plan, lock_key="test:idem")

    assert warehouse.acl(SALES) == acl_after_first
    assert pg.verify(conn, desired) == []
    assert first.digest == second.digest == pg.plan_converge(desired, managed_principal=True).digest
    # The second run finds the role and the USAGE in place; the table ACL is re-asserted.
    assert [line.split(" ")[0] for line in second.skipped] == ["CREATE", "GRANT"]
    assert second.statements == tuple(st.line for st in plan.statements[2:])


def test_converging_keeps_what_another_grant_still_needs(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    analyst = role_name("analyst")
    update = pg.Privileges(frozenset({"UPDATE"}))
    converge(conn, pg.Desired.union(analyst, SALES, READ, update))
    assert can_run(warehouse, analyst, "UPDATE sales.customers SET name = name WHERE id = 1")

    # The UPDATE grant ends; the read grant is still active: desired is the union of what is left.
    remaining = pg.Desired.union(analyst, SALES, READ)
    converge(conn, remaining)

    assert pg.verify(conn, remaining) == []
    assert as_role(warehouse, analyst, "SELECT count(*) FROM sales.customers") == [(5,)]
    assert not can_run(warehouse, analyst, "UPDATE sales.customers SET name = name WHERE id = 1")


def test_readers_never_see_the_gap_between_revoke_and_grant(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    """REVOKE ALL + GRANT commit together: a session of the principal reading in a loop while the
    grant is re-converged 100 times never gets 'permission denied'."""
    analyst = role_name("analyst")
    converge(conn, pg.Desired.union(analyst, SALES, READ))
    plans = [
        pg.plan_converge(pg.Desired.union(analyst, SALES, READ), managed_principal=True),
        pg.plan_converge(
            pg.Desired.union(analyst, SALES, READ, pg.Privileges(frozenset({"INSERT"}))), managed_principal=True
        ),
    ]
    denied: list[str] = []
    reads = [0]
    stop = threading.Event()

    def read_loop() -> None:
        reader = psycopg2.connect(**server_params(warehouse.name))
        reader.autocommit = True
        with reader.cursor() as cur:
            cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(analyst)))
            while not stop.is_set():
                try:
                    cur.execute("SELECT count(*) FROM sales.customers")
                    reads[0] += 1
                except psycopg2.errors.InsufficientPrivilege as exc:
                    denied.append(str(exc))
        reader.close()

    thread = threading.Thread(target=read_loop)
    thread.start()
    try:
        for i in range(100):
            pg.apply(conn, plans[i % 2], lock_key="test:gap")
    finally:
        stop.set()
        thread.join()
    assert denied == []
    assert reads[0] > 10


def test_hostile_identifiers_round_trip(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    principal = role_name('Analyst "EU"; DROP ROLE x; --')
    desired = pg.Desired(
        principal,
        HOSTILE,
        frozenset({"SELECT"}),
        {HOSTILE_COLUMN: frozenset({"UPDATE"}), PERCENT_COLUMN: frozenset({"INSERT", "UPDATE"})},
    )

    converge(conn, desired, lock_key="test:hostile")

    assert pg.verify(conn, desired) == []
    assert as_role(warehouse, principal, select(("id", HOSTILE_COLUMN), HOSTILE)) == [(1, "4111"), (2, "5500")]
    update = sql.SQL("UPDATE {} SET {} = 'maybe' WHERE id = 1").format(
        sql.Identifier(HOSTILE.schema, HOSTILE.name), sql.Identifier(PERCENT_COLUMN)
    )
    assert can_run(warehouse, principal, update)
    assert not can_run(
        warehouse, principal, sql.SQL("DELETE FROM {}").format(sql.Identifier(HOSTILE.schema, HOSTILE.name))
    )
    observed = pg.observe(conn, [principal])
    assert observed.privileges_of(principal, HOSTILE) == pg.Privileges(
        frozenset({"SELECT"}), {HOSTILE_COLUMN: frozenset({"UPDATE"}), PERCENT_COLUMN: frozenset({"INSERT", "UPDATE"})}
    )

    nothing = pg.Desired(principal, HOSTILE)
    converge(conn, nothing, lock_key="test:hostile")
    assert pg.verify(conn, nothing) == []
    assert not can_run(warehouse, principal, select(("id",), HOSTILE))
    # The names were data, never SQL: the table the name "drops" is still there, and so is the role.
    assert warehouse.run("SELECT to_regclass('public.x') IS NOT NULL") == [(True,)]
    assert pg.verify_role(conn, principal, present=True) == []


def test_verify_reports_out_of_band_changes(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    analyst = role_name("analyst")
    desired = pg.Desired.union(analyst, SALES, READ)
    converge(conn, desired)
    ident = sql.Identifier(analyst)

    warehouse.run(sql.SQL("GRANT UPDATE ON sales.customers TO {}").format(ident))
    warehouse.run(sql.SQL("GRANT INSERT (email) ON sales.customers TO {}").format(ident))
    # Granted on the owner's authority: the portal's role could not revoke them, and says who can.
    owners = " (granted by postgres: the portal's role cannot revoke it; postgres or a superuser must)"
    assert pg.verify(conn, desired) == [
        f"unexpected UPDATE on sales.customers for {analyst}{owners}",
        f"unexpected INSERT (email) on sales.customers for {analyst}{owners}",
    ]

    warehouse.run(sql.SQL("REVOKE ALL ON sales.customers FROM {}").format(ident))  # the owner's grants
    warehouse.run_as_portal(sql.SQL("REVOKE ALL ON sales.customers FROM {}").format(ident))  # the portal's
    warehouse.run_as_portal(sql.SQL("REVOKE USAGE ON SCHEMA sales FROM {}").format(ident))
    assert pg.verify(conn, desired) == [
        f"missing USAGE on schema sales for {analyst}",
        f"missing SELECT on sales.customers for {analyst}",
    ]

    # Inherited privileges are not the principal's own: a PUBLIC grant does not satisfy verify.
    warehouse.run("GRANT SELECT ON sales.orders TO PUBLIC")
    try:
        orders = pg.Desired.union(analyst, pg.ObjectRef("sales", "orders"), READ)
        assert f"missing SELECT on sales.orders for {analyst}" in pg.verify(conn, orders)
    finally:
        warehouse.run("REVOKE SELECT ON sales.orders FROM PUBLIC")

    converge(conn, desired)  # repair
    assert pg.verify(conn, desired) == []
    columns = pg.Desired(analyst, SALES, frozenset(), {"name": frozenset({"SELECT"})})
    assert pg.verify(conn, columns) == [
        f"missing SELECT (name) on sales.customers for {analyst}",
        f"unexpected SELECT on sales.customers for {analyst}",
    ]
    missing_table = pg.Desired.union(analyst, pg.ObjectRef("sales", "gone"), READ)
    assert pg.verify(conn, missing_table) == ["table sales.gone does not exist"]
    assert pg.verify(conn, pg.Desired.union(analyst, pg.ObjectRef("sales", "gone"))) == []


def test_membership_plan_and_verify(warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]) -> None:
    group, member = role_name("group"), role_name("member")
    converge(conn, pg.Desired.union(group, SALES, READ))
    pg.apply(
        conn,
        pg.plan_converge(pg.Desired.union(member, pg.ObjectRef("sales", "orders"), READ), managed_principal=True),
        lock_key="t",
    )
    assert pg.verify_membership(conn, member, group, present=False) == []
    assert pg.verify_membership(conn, member, group, present=True) == [f"missing membership of {member} in {group}"]

    pg.apply(conn, pg.plan_membership(member, group, present=True), lock_key="test:member")
    pg.apply(conn, pg.plan_membership(member, group, present=True), lock_key="test:member")  # idempotent
    assert pg.verify_membership(conn, member, group, present=True) == []
    assert as_role(warehouse, member, "SELECT count(*) FROM sales.customers") == [(5,)]

    pg.apply(conn, pg.plan_membership(member, group, present=False), lock_key="test:member")
    second = pg.apply(conn, pg.plan_membership(member, group, present=False), lock_key="test:member")
    assert second.statements == ()
    assert pg.verify_membership(conn, member, group, present=False) == []
    assert not can_run(warehouse, member, "SELECT count(*) FROM sales.customers")
    assert pg.verify_membership(conn, "gtp_nobody", group, present=True) == ["role gtp_nobody does not exist"]


# --- errors -----------------------------------------------------------------------------------


def test_unknown_table_column_or_role_is_a_permanent_error(conn: PgConnection, role_name: Callable[[str], str]) -> None:
    analyst = role_name("analyst")
    with pytest.raises(pg.PermanentError) as missing_table:
        converge(conn, pg.Desired.union(analyst, pg.ObjectRef("sales", "nope"), READ))
    assert missing_table.value.sqlstate == "42P01"
    assert missing_table.value.message.startswith(
        'table does not exist: relation "sales.nope" does not exist [SQLSTATE 42P01]'
    )
    assert "\n" not in missing_table.value.message

    with pytest.raises(pg.PermanentError) as missing_column:
        converge(conn, pg.Desired(analyst, SALES, frozenset(), {"salary": frozenset({"SELECT"})}))
    assert missing_column.value.sqlstate == "42703"
    assert "column does not exist" in missing_column.value.message and "salary" in missing_column.value.message

    with pytest.raises(pg.PermanentError) as missing_role:
        converge(conn, pg.Desired.union(role_name("unmanaged"), SALES, READ), managed=False)
    assert missing_role.value.sqlstate == "42704"

    with pytest.raises(pg.PermanentError) as missing_schema:
        pg.apply(conn, pg.plan_schema_usage(analyst, "no_such_schema", keep=True), lock_key="t")
    assert missing_schema.value.sqlstate == "3F000"
    # Nothing was left behind by the failed transactions, and the connection is usable again.
    assert pg.verify_role(conn, analyst, present=False) == []


def test_permission_denied_is_permanent(warehouse: Warehouse, role_name: Callable[[str], str]) -> None:
    weak = role_name("weak_admin")
    password = "weak-admin-pw-1"
    warehouse.run(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(weak), sql.Literal(password)))
    conn = pg.connect(target_for(warehouse.name, user=weak, password=password))
    try:
        with pytest.raises(pg.PermanentError) as denied:
            converge(conn, pg.Desired.union(role_name("analyst"), SALES, READ), managed=False)
        assert denied.value.sqlstate in {"42501", "42704"}
        with pytest.raises(pg.PermanentError) as denied_grant:
            converge(conn, pg.Desired.union(weak, SALES, READ), managed=False)
        assert denied_grant.value.sqlstate == "42501"
        assert denied_grant.value.message.startswith("permission denied:")
    finally:
        conn.close()


def test_unreachable_target_is_transient_and_never_shows_the_password(warehouse: Warehouse) -> None:
    secret = "Sup3r-secret-pw-do-not-log"
    target = pg.Target("127.0.0.1", 1, warehouse.name, "gov", password=secret, sslmode="disable", connect_timeout=2)
    with pytest.raises(pg.TransientError) as refused:
        pg.connect(target)
    message = refused.value.message
    assert message.startswith("cannot connect to gov@127.0.0.1:1/")
    assert secret not in message and secret not in str(refused.value) and secret not in repr(refused.value)
    assert refused.value.__cause__ is None and refused.value.connection_lost
    with pytest.raises(pg.TransientError):
        with pg.POOL.connection(target):
            pass


def test_only_a_target_that_does_not_answer_counts_as_unreachable(warehouse: Warehouse) -> None:
    """`unreachable` makes the engine park a whole source's jobs and probe it: only when the target
    did not answer. A refused connection or a session the server drops is; an error the server
    answered with (a wrong password, a full server, a lock timeout) is not."""
    refused = pg.Target("127.0.0.1", 1, warehouse.name, "gov", sslmode="disable", connect_timeout=2)
    with pytest.raises(pg.TransientError) as down:
        pg.connect(refused)
    assert down.value.unreachable
    with pytest.raises(pg.TransientError):
        pg.probe(refused)

    conn = pg.connect(warehouse.target)
    pid = conn.info.backend_pid
    warehouse.run("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(pg.TransientError) as dropped:
        pg.apply(conn, pg.plan_schema_usage("gtp_whoever", "sales", keep=False), lock_key="test:dropped")
    assert dropped.value.unreachable and dropped.value.connection_lost
    conn.close()

    wrong = dataclasses.replace(warehouse.target, password="not-the-password")
    with pytest.raises(pg.PermanentError) as refused_login:
        pg.connect(wrong)
    assert not refused_login.value.unreachable
    pg.probe(wrong)  # the server answered (no): it is there
    pg.probe(warehouse.target)

    full = pg.classify_error(
        psycopg2.OperationalError('FATAL:  too many connections for role "portal"'), connecting_to="x@h:5432/d"
    )
    assert isinstance(full, pg.TransientError) and not full.unreachable


def test_a_conflicting_advisory_lock_times_out_as_transient(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    """Another worker holds the object's lock: this one gives up after lock_timeout, retried later."""
    desired = pg.Desired.union(role_name("analyst"), SALES, READ)
    plan = pg.plan_converge(desired, managed_principal=True)
    holder = admin_connection(warehouse.name)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (pg.advisory_key(plan.lock_keys[0]),))
        started = time.perf_counter()
        with pytest.raises(pg.TransientError) as timed_out:
            pg.apply(conn, plan, lock_key="test:other-key", lock_timeout_ms=200)
        assert time.perf_counter() - started < 3
        assert timed_out.value.sqlstate == "55P03" and not timed_out.value.unreachable
        assert timed_out.value.message.startswith("lock timeout: canceling statement due to lock timeout")
    finally:
        holder.close()
    pg.apply(conn, plan, lock_key="test:other-key")  # the lock is free again: the retry succeeds
    assert pg.verify(conn, desired) == []


def test_ddl_in_progress_on_the_table_times_out_as_transient(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    """A migration altering the table holds its pg_class row: GRANT waits for it, bounded."""
    desired = pg.Desired.union(role_name("analyst"), pg.ObjectRef("sales", "orders"), READ)
    migration = admin_connection(warehouse.name)
    migration.autocommit = False
    try:
        with migration.cursor() as cur:
            cur.execute("ALTER TABLE sales.orders ADD COLUMN note text")
        with pytest.raises(pg.TransientError) as timed_out:
            pg.apply(conn, pg.plan_converge(desired, managed_principal=True), lock_key="test:ddl", lock_timeout_ms=200)
        assert timed_out.value.sqlstate == "55P03"
    finally:
        migration.rollback()
        migration.close()
    converge(conn, desired)
    assert pg.verify(conn, desired) == []


def test_statement_timeout_is_transient(warehouse: Warehouse, conn: PgConnection) -> None:
    slow = pg.Plan.build([pg.Statement.of(sql.SQL("SELECT pg_catalog.pg_sleep(2)"))])
    with pytest.raises(pg.TransientError) as timed_out:
        pg.apply(conn, slow, lock_key="test:slow", statement_timeout_ms=100)
    assert timed_out.value.sqlstate == "57014"


def test_apply_refuses_a_connection_in_the_wrong_state(warehouse: Warehouse, conn: PgConnection) -> None:
    plan = pg.plan_schema_usage("gtp_whoever", "sales", keep=False)
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
    with pytest.raises(ValueError, match="no open transaction"):
        pg.apply(conn, plan, lock_key="t")
    conn.rollback()
    conn.autocommit = True
    with pytest.raises(ValueError, match="autocommit off"):
        pg.apply(conn, plan, lock_key="t")


def test_combined_plans_apply_in_one_transaction(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    analyst = role_name("batch")
    objects = [SALES, pg.ObjectRef("sales", "orders"), HOSTILE]
    desired = [pg.Desired.union(analyst, obj, READ) for obj in objects]
    plan = pg.Plan.combine([pg.plan_converge(d, managed_principal=True) for d in desired])

    assert sum(line.startswith("CREATE ROLE") for line in plan.lines) == 1
    assert sum(line.startswith('GRANT USAGE ON SCHEMA "sales"') for line in plan.lines) == 1
    assert len(plan.lock_keys) == 3
    result = pg.apply(conn, plan, lock_key="test:batch")

    assert len(result.statements) == len(plan.statements)
    for d in desired:
        assert pg.verify(conn, d) == []
    # A failing member rolls the whole batch back: nothing half-applied.
    broken = pg.Plan.combine(
        [pg.plan_converge(pg.Desired.union(analyst, obj, WRITE), managed_principal=True) for obj in objects]
        + [pg.plan_converge(pg.Desired.union(analyst, pg.ObjectRef("sales", "nope"), READ), managed_principal=True)]
    )
    with pytest.raises(pg.PermanentError):
        pg.apply(conn, broken, lock_key="test:batch")
    for d in desired:
        assert pg.verify(conn, d) == []


def test_roles_created_together_fall_back_to_one_savepoint_each_when_one_exists_meanwhile(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    """A batch's CREATE ROLEs share one savepoint. When one meets "already exists" (another worker
    created the role between the guard and the statement: here a guard that always says yes), they
    run again one savepoint each: the others are created, that one is skipped, nothing fails."""
    names = [role_name("together") for _ in range(3)]
    warehouse.run(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(names[1])))

    def create(name: str) -> pg.Statement:
        return pg.Statement.of(
            sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)),
            guard=sql.SQL("SELECT true"),
            condition="always (the race, forced)",
            tolerate=("42710",),
            reads=(),
            writes=(),
        )

    plan = pg.Plan.build([create(n) for n in names])
    result = pg.apply(conn, plan, lock_key="test:together")
    assert result.statements == (plan.statements[0].line, plan.statements[2].line)
    assert result.skipped == (plan.statements[1].line,)
    found = warehouse.run("SELECT rolname::text FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1", (names,))
    assert [r[0] for r in found] == sorted(names)
