"""Guards and verification stay linear in a batch's size: every ACL is exploded once per query.

A database's ACL holds an entry per package (CONNECT) and a schema's an entry per package of its
tables (USAGE). Guards that exploded that ACL again for each statement they answered cost a batch
packages x packages (issue 15's bulk benchmark: 300 CONNECT guards took 210-340 ms, and the rate
fell as the run grew). Asserted on the plan PostgreSQL really ran (EXPLAIN ANALYZE: how often each
``aclexplode`` was called), not on a clock, and on the answers themselves.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg2 import sql

from governance.provisioners import pg_packages as pgp
from governance.provisioners import postgres as pg
from governance.provisioners.postgres.planning import CONNECT_LACKING, USAGE_LACKING

from .conftest import RUN_PREFIX, SALES, Warehouse

N = 40  # packages: enough for a per-guard explosion to show as N loops


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def aclexplode_loops(wh: Warehouse, query: sql.Composable) -> tuple[int, Any]:
    """How many times ``query`` called aclexplode (all its scans together), and its answer."""
    conn = wh.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            answer = cur.fetchone()
            cur.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(query))
            (raw,) = cur.fetchone()
        plan = (raw if isinstance(raw, list) else json.loads(raw))[0]["Plan"]
    finally:
        conn.close()
    loops = sum(n.get("Actual Loops", 0) for n in _nodes(plan) if n.get("Function Name") == "aclexplode")
    return loops, answer


@pytest.fixture
def packages(warehouse: Warehouse) -> list[str]:
    """N package-like roles, each holding CONNECT on the database and USAGE on the schema."""
    run = secrets.token_hex(3)  # roles are cluster-wide and dropped at the end of the session
    names = [f"{RUN_PREFIX}scale_{run}_{i}" for i in range(N)]
    for name in names:
        role = sql.Identifier(name)
        warehouse.run(sql.SQL("CREATE ROLE {} NOLOGIN").format(role))
        warehouse.run(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(warehouse.name), role))
        warehouse.run(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(SALES.schema), role))
    return names


def test_connect_guards_explode_each_database_acl_once(warehouse: Warehouse, packages: list[str]) -> None:
    lacking = f"{RUN_PREFIX}scale_lacking_{secrets.token_hex(3)}"
    warehouse.run(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(lacking)))
    missing = f"{RUN_PREFIX}scale_missing_{secrets.token_hex(3)}"
    rows = [(name, warehouse.name) for name in [*packages, lacking, missing]]
    loops, (answers,) = aclexplode_loops(warehouse, CONNECT_LACKING.many(rows))
    # Every package holds CONNECT; the role without it and the role that does not exist lack it.
    assert answers == [False] * N + [True, True]
    assert loops < N  # once per database of the cluster, not once per guard


def test_usage_guards_explode_each_schema_acl_once(warehouse: Warehouse, packages: list[str]) -> None:
    lacking = f"{RUN_PREFIX}scale_nousage_{secrets.token_hex(3)}"
    warehouse.run(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(lacking)))
    rows = [(name, SALES.schema) for name in [*packages, lacking]]
    loops, (answers,) = aclexplode_loops(warehouse, USAGE_LACKING.many(rows))
    assert answers == [False] * N + [True]
    assert loops < N


def test_package_acl_guards_and_verification_read_the_schema_acl_once(
    warehouse: Warehouse, packages: list[str]
) -> None:
    read = pg.privileges_for_level("read", server_version_num=150000)
    guards = [pgp._acl_differs(pg.Package(name, SALES, read)) for name in packages]
    loops, (answers,) = aclexplode_loops(warehouse, guards[0].kind.many([g.args for g in guards]))
    assert answers == [True] * N  # they hold USAGE but not SELECT on the table: not as defined
    # The table's ACL is read per package (it holds one entry per package of that table, a few;
    # no column has an ACL here); the schemas' ACLs, which hold one entry per package of the
    # schema, once each (for every schema of the database: there are a handful here).
    (schemas,) = warehouse.run("SELECT count(*) FROM pg_namespace")[0]
    assert schemas < N
    assert loops <= N + schemas, loops

    # The verification of these packages' desired states (plus one role without USAGE) says which
    # lacks USAGE from the schema's holders read once: exactly the one that lacks it.
    lacking = f"{RUN_PREFIX}scale_verify_{secrets.token_hex(3)}"
    warehouse.run(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(lacking)))
    desireds = [pg.Desired(name, SALES, frozenset({"select"})) for name in [*packages, lacking]]
    conn = warehouse.connect()
    try:
        found = pg.verify_many(conn, desireds)
    finally:
        conn.close()
    usage = [any(line.startswith("missing USAGE on schema") for line in problems) for problems in found]
    assert usage == [False] * N + [True]
    assert all(any("SELECT" in line for line in problems) for problems in found)  # none holds SELECT yet
