"""observe() for the reconciler, and the connection pool."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from governance.provisioners import postgres as pg

from .conftest import SALES, Warehouse, converge

PG_VERSION = 150000
ORDERS = pg.ObjectRef("sales", "orders")


def counting_cursor_factory(counter: list[int]) -> type[psycopg2.extensions.cursor]:
    class CountingCursor(psycopg2.extensions.cursor):
        def execute(self, query: Any, vars: Any = None) -> Any:
            counter[0] += 1
            return super().execute(query, vars)

    return CountingCursor


def test_observe_reads_every_role_in_at_most_three_queries(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    a, b, c, ghost = role_name("a"), role_name("b"), role_name("c"), role_name("ghost")
    read = pg.privileges_for_level("read", server_version_num=PG_VERSION)
    write = pg.privileges_for_level("write", server_version_num=PG_VERSION)
    some_columns = pg.privileges_for_level("read", ("id", "name"), server_version_num=PG_VERSION)
    desired_a = pg.Desired.union(a, SALES, read)
    desired_b_sales = pg.Desired.union(b, SALES, some_columns)
    desired_b_orders = pg.Desired.union(b, ORDERS, write)
    for desired in (desired_a, desired_b_sales, desired_b_orders):
        converge(conn, desired)
    warehouse.run(sql.SQL("CREATE ROLE {} NOLOGIN IN ROLE {}").format(sql.Identifier(c), sql.Identifier(a)))

    counter = [0]
    conn.cursor_factory = counting_cursor_factory(counter)
    observed = pg.observe(conn, [a, b, c, ghost])

    assert counter[0] <= 3
    assert observed.existing == {a, b, c}
    assert dict(observed.memberships) == {c: {a}}
    assert dict(observed.schema_usage) == {a: {"sales"}, b: {"sales"}}
    assert set(observed.privileges) == {a, b}
    assert observed.privileges_of(a, SALES) == desired_a.privileges
    assert observed.privileges_of(b, SALES) == desired_b_sales.privileges
    assert observed.privileges_of(b, ORDERS) == desired_b_orders.privileges
    assert observed.privileges_of(c, SALES).empty and observed.privileges_of(ghost, SALES).empty

    # Streaming in batches of one row gives the same answer (the server-side cursor path).
    assert pg.observe(conn, [a, b, c, ghost], batch_size=1) == observed
    assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE


def test_pool_reuses_one_connection_across_jobs(warehouse: Warehouse, role_name: Callable[[str], str]) -> None:
    pool = pg.ConnectionPool()
    desired = pg.Desired.union(role_name("analyst"), SALES, pg.privileges_for_level("read", server_version_num=1))
    try:
        for _ in range(5):
            with pool.connection(warehouse.target) as conn:
                converge(conn, desired)
                assert pg.verify(conn, desired) == []
        assert (pool.opened, pool.reused) == (1, 4)
    finally:
        pool.close_all()


def test_pool_discards_a_connection_the_server_killed(warehouse: Warehouse, role_name: Callable[[str], str]) -> None:
    pool = pg.ConnectionPool()
    desired = pg.Desired.union(role_name("analyst"), SALES, pg.privileges_for_level("read", server_version_num=1))
    try:
        with pool.connection(warehouse.target) as conn:
            converge(conn, desired)
            pid = conn.info.backend_pid
        warehouse.run("SELECT pg_terminate_backend(%s)", (pid,))

        # The next job finds out on its first statement: a transient error, and the pool drops it...
        raised = None
        try:
            with pool.connection(warehouse.target) as conn:
                converge(conn, desired)
        except pg.TransientError as exc:
            raised = exc
        assert raised is not None and raised.connection_lost
        # ...so the job after that gets a new, working connection.
        with pool.connection(warehouse.target) as conn:
            converge(conn, desired)
            assert conn.info.backend_pid != pid
        assert pool.opened == 2

        # With a health check after idling, a killed connection is replaced before the job sees it.
        eager = pg.ConnectionPool(check_idle_after_s=0)
        try:
            with eager.connection(warehouse.target) as conn:
                pid = conn.info.backend_pid
            warehouse.run("SELECT pg_terminate_backend(%s)", (pid,))
            with eager.connection(warehouse.target) as conn:
                converge(conn, desired)
            assert eager.opened == 2
        finally:
            eager.close_all()
    finally:
        pool.close_all()


def test_pool_retires_connections_after_a_password_change(
    warehouse: Warehouse, role_name: Callable[[str], str]
) -> None:
    user = role_name("svc")
    warehouse.run(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'first-password-1'").format(sql.Identifier(user)))
    first = dataclasses.replace(warehouse.target, user=user, password="first-password-1")
    second = dataclasses.replace(first, password="second-password-2")
    assert first.key == second.key  # the key never contains the password...
    pool = pg.ConnectionPool()
    try:
        with pool.connection(first) as conn:
            old = conn
        warehouse.run(sql.SQL("ALTER ROLE {} PASSWORD 'second-password-2'").format(sql.Identifier(user)))
        with pool.connection(second) as conn:
            assert conn is not old  # ...but a connection made with the old password is not reused
        assert old.closed and pool.opened == 2
        pool.close_all()
        assert conn.closed
    finally:
        pool.close_all()


def test_pool_get_keeps_one_connection_per_thread_and_target(
    warehouse: Warehouse, role_name: Callable[[str], str]
) -> None:
    pool = pg.ConnectionPool()
    desired = pg.Desired.union(role_name("analyst"), SALES, pg.privileges_for_level("read"))
    try:
        first = pool.get(warehouse.target)
        for _ in range(5):
            conn = pool.get(warehouse.target)
            assert conn is first
            converge(conn, desired)
            assert pg.verify(conn, desired) == []
        assert (pool.opened, pool.reused) == (1, 5)

        other: list[PgConnection] = []
        thread = threading.Thread(target=lambda: other.append(pool.get(warehouse.target)))
        thread.start()
        thread.join()
        assert other[0] is not first  # another thread never shares a connection

        # A job that leaves a transaction open does not poison the next one.
        with first.cursor() as cur:
            cur.execute("SELECT 1")
        assert pool.get(warehouse.target) is first
        assert first.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE

        # After a connection error the caller discards; the next get() connects again.
        warehouse.run("SELECT pg_terminate_backend(%s)", (first.info.backend_pid,))
        try:
            converge(first, desired)
        except pg.TransientError:
            pool.discard(warehouse.target)
        assert first.closed
        replacement = pool.get(warehouse.target)
        assert replacement is not first and not replacement.closed
        converge(replacement, desired)
    finally:
        pool.close_all()
    assert replacement.closed and other[0].closed
