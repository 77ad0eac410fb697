"""Planning: level mapping, normalisation, deterministic text and digest, redaction, quoting.

Most of these need no database; the quoting test renders every plan through libpq on a real
connection and requires the offline rendering (used for digests at approval time) to be identical.
"""

from __future__ import annotations

import ast
import base64
import datetime as dt
import hashlib
import hmac
import re
from pathlib import Path

import psycopg2.extensions
import pytest
from psycopg2.extensions import connection as PgConnection

from governance.provisioners import pg_packages as pgp
from governance.provisioners import postgres as pg
from governance.provisioners.scram import scram_sha256_matches, scram_sha256_verifier

from .conftest import HOSTILE, HOSTILE_COLUMN, PERCENT_COLUMN, SALES

PG15 = 150020
PG17 = 170000
ALL_BUT_MAINTAIN = {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}


def test_levels_map_to_privileges() -> None:
    assert pg.privileges_for_level("read", server_version_num=PG15) == pg.Privileges(frozenset({"SELECT"}))
    assert pg.privileges_for_level("write", server_version_num=PG15) == pg.Privileges(
        frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
    )
    assert pg.privileges_for_level("admin", server_version_num=PG15).table == ALL_BUT_MAINTAIN
    assert pg.privileges_for_level("admin", server_version_num=PG17).table == ALL_BUT_MAINTAIN | {"MAINTAIN"}

    read_cols = pg.privileges_for_level("read", ["name", "id"], server_version_num=PG15)
    assert read_cols.table == frozenset()
    assert dict(read_cols.columns) == {"id": {"SELECT"}, "name": {"SELECT"}}
    # write with a column list: column SELECT/INSERT/UPDATE and no DELETE (no column-level DELETE exists,
    # and a table DELETE would destroy the excluded columns too).
    write_cols = pg.privileges_for_level("write", ["id"], server_version_num=PG15)
    assert write_cols.table == frozenset()
    assert dict(write_cols.columns) == {"id": {"SELECT", "INSERT", "UPDATE"}}

    # Without a server version: the set every supported server has (no MAINTAIN).
    assert pg.privileges_for_level("admin").table == ALL_BUT_MAINTAIN
    assert pg.privileges_for_level("read", ["id"]) == pg.Privileges(frozenset(), {"id": frozenset({"SELECT"})})

    with pytest.raises(ValueError, match="admin access cannot be limited to columns"):
        pg.privileges_for_level("admin", ["id"], server_version_num=PG15)
    with pytest.raises(ValueError, match="unknown access level"):
        pg.privileges_for_level("owner", server_version_num=PG15)


def test_desired_is_the_normalised_union_of_grants() -> None:
    read_some = pg.privileges_for_level("read", ["id", "name"], server_version_num=PG15)
    read_other = pg.privileges_for_level("read", ["country"], server_version_num=PG15)
    write_all = pg.privileges_for_level("write", server_version_num=PG15)

    columns_only = pg.Desired.union("gtp_x", SALES, read_some, read_other)
    assert columns_only.table_privileges == frozenset()
    assert dict(columns_only.column_privileges) == {"country": {"SELECT"}, "id": {"SELECT"}, "name": {"SELECT"}}

    # The table-level SELECT of the write grant covers the column-level SELECTs: not granted twice.
    both = pg.Desired.union("gtp_x", SALES, read_some, write_all)
    assert both.table_privileges == {"SELECT", "INSERT", "UPDATE", "DELETE"}
    assert dict(both.column_privileges) == {}

    lower = pg.Desired("gtp_x", SALES, frozenset({"select"}), {"email": frozenset({"update"})})
    assert lower.table_privileges == {"SELECT"} and dict(lower.column_privileges) == {"email": {"UPDATE"}}
    assert pg.Desired.union("gtp_x", SALES).empty

    with pytest.raises(ValueError, match="cannot be granted on a column"):
        pg.Desired("gtp_x", SALES, frozenset(), {"email": frozenset({"DELETE"})})
    with pytest.raises(ValueError, match="unknown table privileges"):
        pg.Desired("gtp_x", SALES, frozenset({"FLY"}))


def test_invalid_names_are_refused_before_any_sql() -> None:
    for bad in ("", "a\x00b", "x" * 64, "é" * 32):
        with pytest.raises(ValueError):
            pg.ObjectRef("sales", bad)
    for reserved in ("public", "none", "pg_monitor"):
        with pytest.raises(ValueError, match="reserved"):
            pg.Desired(reserved, SALES, frozenset({"SELECT"}))
    assert pg.ObjectRef("s", "x" * 63).name == "x" * 63  # 63 bytes is the limit, not more


def test_converge_plan_text_and_order() -> None:
    desired = pg.Desired("gov_u_analyst", SALES, frozenset({"UPDATE", "SELECT"}), {"email": frozenset({"REFERENCES"})})
    plan = pg.plan_converge(desired, managed_principal=True)
    assert plan.lines == (
        'CREATE ROLE "gov_u_analyst" NOLOGIN  -- only if role gov_u_analyst does not exist',
        'GRANT USAGE ON SCHEMA "sales" TO "gov_u_analyst"  -- only if gov_u_analyst lacks USAGE on schema sales',
        'REVOKE ALL ON TABLE "sales"."customers" FROM "gov_u_analyst"',
        'GRANT SELECT, UPDATE ON TABLE "sales"."customers" TO "gov_u_analyst"',
        'GRANT REFERENCES ("email") ON TABLE "sales"."customers" TO "gov_u_analyst"',
    )
    assert plan.lock_keys == (pg.lock_name("table", "sales", "customers"),)
    assert re.fullmatch(r"[0-9a-f]{64}", plan.digest)

    unmanaged = pg.plan_converge(desired, managed_principal=False)
    assert not unmanaged.lines[0].startswith("CREATE ROLE")
    login = pg.plan_converge(desired, managed_principal=True, login=True)
    assert login.lines[0].startswith('CREATE ROLE "gov_u_analyst" LOGIN')

    empty = pg.plan_converge(pg.Desired("gov_u_analyst", SALES), managed_principal=True)
    assert empty.lines == (
        'REVOKE ALL ON TABLE "sales"."customers" FROM "gov_u_analyst"'
        "  -- only if gov_u_analyst holds privileges on sales.customers directly",
    )


def test_plan_digest_is_deterministic() -> None:
    def build(cols: list[str], privs: list[str]) -> pg.Plan:
        grant = pg.Privileges(frozenset(privs), {c: frozenset({"SELECT", "UPDATE"}) for c in cols})
        return pg.plan_converge(pg.Desired.union("gov_u_a", SALES, grant), managed_principal=True)

    first = build(["name", "id", "country"], ["INSERT"])
    again = build(["country", "id", "name"], ["INSERT"])
    assert first.digest == again.digest and first.text == again.text
    assert build(["name", "id"], ["INSERT"]).digest != first.digest
    assert build(["name", "id", "country"], ["INSERT", "DELETE"]).digest != first.digest
    assert pg.plan_converge(pg.Desired.union("gov_u_b", SALES), managed_principal=True).digest != first.digest
    # Whether the role would be created is part of what an approver sees.
    assert (
        pg.plan_converge(pg.Desired("gov_u_a", SALES, frozenset({"SELECT"})), managed_principal=True).digest
        != pg.plan_converge(pg.Desired("gov_u_a", SALES, frozenset({"SELECT"})), managed_principal=False).digest
    )


def test_offline_rendering_is_exactly_what_libpq_renders(conn: PgConnection) -> None:
    """Digests are computed without a connection; they must describe the SQL that really runs."""
    hostile_principal = 'gtp Analyst "EU"; --'
    until = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    plans = [
        pg.plan_converge(
            pg.Desired(
                hostile_principal,
                HOSTILE,
                frozenset({"SELECT"}),
                {HOSTILE_COLUMN: frozenset({"UPDATE"}), PERCENT_COLUMN: frozenset({"INSERT"})},
            ),
            managed_principal=True,
        ),
        pg.plan_converge(pg.Desired(hostile_principal, HOSTILE), managed_principal=True),
        pg.plan_schema_usage(hostile_principal, "Sales EU", keep=False),
        pg.plan_membership("gtp it's", 'gtp "group"', present=False),
        pg.plan_login_role("gtp_o'neil", "Pa55-word-x", until, ["gtp grp"]),
        pg.plan_drop_role("gtp_o'neil"),
    ]
    for plan in plans:
        assert plan.render(conn) == plan.render() == list(plan.lines)
        for st in plan.statements:
            assert st.text == st.as_string(conn)
            if st.guard is not None:
                assert pg.render(st.guard) == st.guard.as_string(conn)
    assert '"Order ""Lines""; DROP TABLE x; --"' in plans[0].text


def test_login_plan_never_shows_the_password() -> None:
    until = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    password = "Tr0ub4dor-and-3-more"
    plan = pg.plan_login_role("gtp_jit_1", password, until, "gtp_group")
    other = pg.plan_login_role("gtp_jit_1", "another-password-9", until, "gtp_group")
    for shown in (plan.text, repr(plan), repr(plan.statements), str(plan.lines)):
        assert password not in shown
        assert "SCRAM-SHA-256$" not in shown
        assert pg.REDACTED in plan.text
    # The digest describes the intent, not the random salt or the password.
    assert plan.digest == other.digest
    assert plan.lines[0] == (
        "CREATE ROLE \"gtp_jit_1\" LOGIN PASSWORD '[REDACTED]' VALID UNTIL '2030-01-01T00:00:00+00:00'"
        ' IN ROLE "gtp_group"  -- only if role gtp_jit_1 does not exist'
    )
    (verifier,) = plan.secret_values
    assert scram_sha256_matches(password, verifier)
    assert not scram_sha256_matches("wrong", verifier)
    with pytest.raises(ValueError, match="timezone-aware"):
        pg.plan_login_role("gtp_jit_1", password, dt.datetime(2030, 1, 1), "gtp_group")


def test_scram_verifier_matches_rfc7677_and_libpq(conn: PgConnection) -> None:
    # RFC 7677 section 3: password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations; the server's
    # final message carries ServerSignature = HMAC(ServerKey, AuthMessage).
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = scram_sha256_verifier("pencil", salt=salt)
    server_key = base64.b64decode(verifier.rsplit(":", 1)[1])
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth_message = f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}"
    signature = hmac.new(server_key, auth_message.encode(), hashlib.sha256).digest()
    assert base64.b64encode(signature).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert scram_sha256_matches("pencil", verifier)

    # And libpq's own SCRAM verifier (random salt) is reproduced exactly from the same salt.
    theirs = psycopg2.extensions.encrypt_password("Pa55-word-x", "gtp_someone", conn, "scram-sha-256")
    their_salt = base64.b64decode(theirs.split("$")[1].split(":")[1])
    assert scram_sha256_verifier("Pa55-word-x", salt=their_salt) == theirs


def test_target_never_shows_its_password() -> None:
    target = pg.Target("db.internal", 5432, "wh", "gov", password="hunter2-hunter2")
    for shown in (repr(target), str(target), target.key):
        assert "hunter2" not in shown
    assert target.key == "gov@db.internal:5432/wh?sslmode=prefer"


SQL_WORDS = re.compile(r"\b(SELECT|GRANT|REVOKE|CREATE|DROP|ALTER|SET|INSERT|UPDATE|DELETE|FROM|WHERE)\b")


def test_no_sql_is_built_with_python_string_formatting() -> None:
    """House rule 9: SQL is composed with psycopg2.sql, never formatted. Scan the module's syntax
    tree: no f-string, %-format or str.format whose constant text looks like SQL."""
    # Every module of the adapter package (and the access packages module that builds on it).
    files = [*sorted(Path(pg.__file__).parent.glob("*.py")), Path(pgp.__file__)]
    source = "\n".join(f.read_text(encoding="utf-8") for f in files)
    offenders: list[str] = []
    for node in (n for f in files for n in ast.walk(ast.parse(f.read_text(encoding="utf-8")))):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
            if SQL_WORDS.search(text):
                offenders.append(f"f-string line {node.lineno}: {text!r}")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and isinstance(side.value, str) and SQL_WORDS.search(side.value):
                    offenders.append(f"string operator line {node.lineno}: {side.value!r}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format"
            and isinstance(node.func.value, ast.Constant)
        ):
            offenders.append(f"str.format line {node.lineno}")
    assert offenders == []
    # Every statement that runs goes through cursor.execute with a Composable or a constant query.
    assert "execute(f" not in source and 'execute("" %' not in source
