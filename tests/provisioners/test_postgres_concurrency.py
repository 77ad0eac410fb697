"""Concurrent workers on one target: the advisory locks, guards and savepoints make races harmless.

Without serialisation, concurrent GRANT/REVOKE on the same table fail with "tuple concurrently
updated" (both rewrite the table's pg_class row); these tests do not depend on that race happening,
they require zero failures with the locks in place.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from governance.provisioners import postgres as pg

from .conftest import SALES, Warehouse

PG_VERSION = 150000
ORDERS = pg.ObjectRef("sales", "orders")


def run_in_threads(workers: list[Callable[[], None]]) -> list[BaseException]:
    failures: list[BaseException] = []
    barrier = threading.Barrier(len(workers))

    def wrap(work: Callable[[], None]) -> None:
        barrier.wait()
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - every failure is collected and asserted on
            failures.append(exc)

    threads = [threading.Thread(target=wrap, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures


def test_two_workers_converging_the_same_table_never_fail(
    warehouse: Warehouse, role_name: Callable[[str], str]
) -> None:
    read = pg.privileges_for_level("read", server_version_num=PG_VERSION)
    write = pg.privileges_for_level("write", server_version_num=PG_VERSION)
    principals = [role_name("stress_a"), role_name("stress_b")]
    rounds = 300
    done = [0, 0]

    def worker(index: int) -> Callable[[], None]:
        p = principals[index]
        cycle = [
            pg.Desired.union(p, SALES, read),
            pg.Desired.union(p, SALES, write),
            pg.Desired.union(p, SALES),  # revoke everything
        ]
        plans = [pg.plan_converge(d, managed_principal=True) for d in cycle]

        def work() -> None:
            conn = warehouse.connect()
            try:
                for i in range(rounds):
                    pg.apply(conn, plans[i % 3], lock_key="stress:sales.customers")
                    done[index] += 1
            finally:
                conn.close()

        return work

    started = time.perf_counter()
    failures = run_in_threads([worker(0), worker(1)])
    elapsed = time.perf_counter() - started

    assert [f"{type(f).__name__}: {f}" for f in failures] == []
    assert done == [rounds, rounds]
    conn = warehouse.connect()
    try:
        for p in principals:  # 300 % 3 == 0: the last plan applied was the revoke
            assert pg.verify(conn, pg.Desired.union(p, SALES)) == []
    finally:
        conn.close()
    assert elapsed < 60


def test_new_principal_on_two_tables_of_one_schema_at_once(
    warehouse: Warehouse, role_name: Callable[[str], str]
) -> None:
    """Two workers, different tables (different object locks) of one schema, the same brand-new
    principal: both try CREATE ROLE and GRANT USAGE at the same moment. The savepoint tolerates the
    duplicate role, the schema lock serialises the USAGE grant: no failure, 20 times over."""
    read = pg.privileges_for_level("read", server_version_num=PG_VERSION)
    conns = [warehouse.connect(), warehouse.connect()]
    try:
        for _ in range(20):
            principal = role_name("fresh")
            desired = [pg.Desired.union(principal, SALES, read), pg.Desired.union(principal, ORDERS, read)]

            def job(i: int, desired: list[pg.Desired] = desired) -> Callable[[], None]:
                plan = pg.plan_converge(desired[i], managed_principal=True)

                def work() -> None:
                    pg.apply(conns[i], plan, lock_key=f"fresh:{i}")

                return work

            failures = run_in_threads([job(0), job(1)])
            assert [f"{type(f).__name__}: {f}" for f in failures] == []
            for d in desired:
                assert pg.verify(conns[0], d) == []
    finally:
        for c in conns:
            c.close()
