"""Login roles' expiry on a PostgreSQL target (no Django here): move ``VALID UNTIL`` alone.

Next to :func:`governance.provisioners.postgres.plan_login_role`, which (re)asserts a JIT login
role's password, expiry and memberships: when the grant's end moves after the grantee has seen the
password, only the expiry may change, so that the password they hold keeps working until the end.
"""

from __future__ import annotations

from datetime import datetime

from psycopg2 import sql

from .postgres import Plan, Statement, _check_role_name, _valid_until_text, display_name


def plan_valid_until(name: str, valid_until: datetime | None) -> Plan:
    """``ALTER ROLE name VALID UNTIL '…'`` while the role exists (a dropped role stays dropped)."""
    _check_role_name(name, "login role")
    guard = sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {})").format(sql.Literal(name))
    statement = Statement.of(
        sql.SQL("ALTER ROLE {} VALID UNTIL {}").format(
            sql.Identifier(name), sql.Literal(_valid_until_text(valid_until))
        ),
        guard=guard,
        condition=f"role {display_name(name)} exists",
    )
    return Plan.build([statement])
