"""JIT credentials: a login role with a password and VALID UNTIL, member of the granted role.

The local test server may use trust authentication (any password is accepted there); the tests then
prove the password by recomputing the SCRAM verifier the server stored, and check that the server
refuses a wrong password whenever it does enforce passwords.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from typing import Any

import psycopg2
import pytest
from psycopg2.extensions import connection as PgConnection

from governance.provisioners import postgres as pg
from governance.provisioners.scram import scram_sha256_matches

from .conftest import SALES, Warehouse, converge, server_params

READ = pg.privileges_for_level("read", server_version_num=150000)


def login(wh: Warehouse, user: str, password: str) -> PgConnection:
    params: dict[str, Any] = {**server_params(wh.name), "user": user, "password": password}
    return psycopg2.connect(**params)


def passwords_enforced(wh: Warehouse, user: str) -> bool:
    try:
        login(wh, user, "certainly-not-the-password").close()
    except psycopg2.OperationalError:
        return True
    return False


def stored_verifier(wh: Warehouse, role: str) -> str:
    return str(wh.run("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))[0][0])


def test_jit_login_role_lives_until_dropped(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    group, user = role_name("analysts"), role_name("jit")
    converge(conn, pg.Desired.union(group, SALES, READ))
    password = secrets.token_urlsafe(24)
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).replace(microsecond=0)

    plan = pg.plan_login_role(user, password, until, group)
    result = pg.apply(conn, plan, lock_key=f"role:{user}")

    (verifier,) = plan.secret_values
    for shown in (*result.statements, *result.skipped, plan.text):
        assert password not in shown and verifier not in shown
    assert pg.verify_role(conn, user, present=True, valid_until=until, login=True) == []
    assert pg.verify_membership(conn, user, group, present=True) == []
    assert scram_sha256_matches(password, stored_verifier(warehouse, user))

    session = login(warehouse, user, password)
    with session.cursor() as cur:
        cur.execute("SELECT count(*) FROM sales.customers")  # through membership of the group
        assert cur.fetchone() == (5,)
    session.rollback()
    if passwords_enforced(warehouse, user):
        with pytest.raises(psycopg2.OperationalError):
            login(warehouse, user, password[:-1])

    # A retried job converges: CREATE is skipped, password and expiry re-asserted, no error.
    again = pg.apply(conn, pg.plan_login_role(user, password, until, group), lock_key=f"role:{user}")
    assert again.skipped[0].startswith("CREATE ROLE") and again.statements[0].startswith("ALTER ROLE")
    assert scram_sha256_matches(password, stored_verifier(warehouse, user))

    dropped = pg.apply(conn, pg.plan_drop_role(user), lock_key=f"role:{user}")
    assert dropped.statements[-1] == f'DROP ROLE IF EXISTS "{user}"'
    assert pg.verify_role(conn, user, present=False) == []
    with pytest.raises(psycopg2.OperationalError):  # its open session was terminated
        with session.cursor() as cur:
            cur.execute("SELECT 1")
    # "role does not exist" under trust auth; a password server says only "authentication failed".
    with pytest.raises(psycopg2.OperationalError, match=r"does not exist|authentication failed"):
        login(warehouse, user, password)
    pg.apply(conn, pg.plan_drop_role(user), lock_key=f"role:{user}")  # idempotent
    assert pg.verify_membership(conn, user, group, present=False) == []


def test_an_expired_login_role_cannot_log_in(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    group, user = role_name("analysts"), role_name("jit")
    converge(conn, pg.Desired.union(group, SALES, READ))
    password = secrets.token_urlsafe(24)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)

    pg.apply(conn, pg.plan_login_role(user, password, past, [group]), lock_key=f"role:{user}")

    assert pg.verify_role(conn, user, present=True, valid_until=past.replace(microsecond=past.microsecond)) == []
    assert warehouse.run("SELECT rolvaliduntil < now() FROM pg_roles WHERE rolname = %s", (user,)) == [(True,)]
    if passwords_enforced(warehouse, user):
        with pytest.raises(psycopg2.OperationalError):
            login(warehouse, user, password)
    pg.apply(conn, pg.plan_drop_role(user), lock_key=f"role:{user}")
