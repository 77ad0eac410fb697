"""Two target databases of their own for the data-subject request tests (customers, orders and
events in each; a hostile table name in the second), registered and synced as the least-privileged
portal role over verify-full TLS, like every source; and two privacy officers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from psycopg2 import sql

from accounts.roles import PRIVACY_OFFICERS
from tests.provisioning.conftest import RUN, admin_connection, dba, register_target
from tests.tls_target import TlsCluster

SUBJECT = "ada@example.com"
HOSTILE = 'Order "Lines"; DROP TABLE x; --'

SHOP_DDL = [
    "CREATE SCHEMA shop",
    "CREATE TABLE shop.customers (id int PRIMARY KEY, email text, full_name text, country text)",
    "CREATE TABLE shop.orders (id int PRIMARY KEY, customer_id int REFERENCES shop.customers (id), amount numeric)",
    "CREATE TABLE shop.events (id int PRIMARY KEY, order_id int REFERENCES shop.orders (id), kind text)",
]
CRM_DDL = [
    "CREATE SCHEMA crm",
    "CREATE TABLE crm.customers (id int PRIMARY KEY, email text, phone text)",
    "CREATE TABLE crm.orders (id int PRIMARY KEY, customer_id int REFERENCES crm.customers (id), total numeric)",
    'CREATE TABLE crm."Order ""Lines""; DROP TABLE x; --"'
    " (line_id int PRIMARY KEY, order_id int REFERENCES crm.orders (id), amount numeric)",
    "CREATE TABLE crm.events (id int PRIMARY KEY, customer_email text, kind text)",
]
# The subject's rows: shop customers 1 (orders 10, 11; events 100, 101); crm customer 1 (order 20,
# lines 200, 201) and crm events 300, 301. Canaries that look like the subject but are not: e-mails
# that contain it, and one that would match if the value were pasted into SQL.
INJECTION = "ada@example.com' OR '1'='1"
SHOP_ROWS = [
    "TRUNCATE shop.customers, shop.orders, shop.events",
    "INSERT INTO shop.customers VALUES (1, 'ada@example.com', 'Ada Lovelace', 'UK'),"
    " (2, 'grace@example.com', 'Grace Hopper', 'US'), (3, 'ADA@example.com.evil', 'Canary One', 'FR'),"
    " (4, 'xada@example.com', 'Canary Two', 'DE')",
    "INSERT INTO shop.orders VALUES (10, 1, 5), (11, 1, 7.5), (12, 2, 3), (13, 3, 9)",
    "INSERT INTO shop.events VALUES (100, 10, 'paid'), (101, 11, 'shipped'), (102, 12, 'paid'), (103, 13, 'paid')",
]
CRM_ROWS = [
    sql.SQL("TRUNCATE crm.customers, crm.orders, crm.events, crm.{}").format(sql.Identifier(HOSTILE)),
    sql.SQL(
        "INSERT INTO crm.customers VALUES (1, 'Ada@Example.com', '+44 20 1234'), (2, 'linus@example.com', NULL),"
        " (3, {}, '+1 555')"
    ).format(sql.Literal(INJECTION)),
    "INSERT INTO crm.orders VALUES (20, 1, 12), (21, 2, 4), (22, 3, 1)",
    sql.SQL("INSERT INTO crm.{} VALUES (200, 20, 6), (201, 20, 6), (202, 21, 4)").format(sql.Identifier(HOSTILE)),
    sql.SQL(
        "INSERT INTO crm.events VALUES (300, 'ada@example.com', 'login'), (301, 'ADA@EXAMPLE.COM', 'login'),"
        " (302, 'linus@example.com', 'login'), (303, {}, 'login')"
    ).format(sql.Literal(INJECTION)),
]
SHOP_TABLES = [("shop", "customers"), ("shop", "orders"), ("shop", "events")]
CRM_TABLES = [("crm", "customers"), ("crm", "orders"), ("crm", HOSTILE), ("crm", "events")]

_CREATED: set[str] = set()


def query(dbname: str, statement: Any, params: Any = None) -> list[tuple[Any, ...]]:
    """Rows of `statement` read by the target's superuser (the tests' DBA, never the portal)."""
    conn = admin_connection(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()
    finally:
        conn.close()


def checksum(dbname: str, table: tuple[str, str], where: str = "true") -> tuple[int, str]:
    """(rows, order-independent md5 of every row's text) of `table`'s rows that satisfy `where`."""
    statement = sql.SQL(
        "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} t WHERE "
    )
    rows = query(dbname, statement.format(sql.Identifier(*table)) + sql.SQL(where))
    return int(rows[0][0]), str(rows[0][1])


def ids(dbname: str, table: tuple[str, str], column: str = "id") -> list[int]:
    statement = sql.SQL("SELECT {c} FROM {t} ORDER BY {c}").format(c=sql.Identifier(column), t=sql.Identifier(*table))
    return [r[0] for r in query(dbname, statement)]


def _database(server: TlsCluster, name: str, ddl: list[str]) -> str:
    if name not in _CREATED:
        server.create_database(name, ddl)
        _CREATED.add(name)
    return name


@pytest.fixture(scope="session")
def shop_dbname(target_server: TlsCluster, django_db_setup: Any, django_db_blocker: Any) -> str:
    return _database(target_server, f"gov_dsr_shop_{RUN}", SHOP_DDL)


@pytest.fixture(scope="session")
def crm_dbname(target_server: TlsCluster, django_db_setup: Any, django_db_blocker: Any) -> str:
    return _database(target_server, f"gov_dsr_crm_{RUN}", CRM_DDL)


def _source(name: str, dbname: str, rows: list[Any], owner: Any, classifications: Any) -> Any:
    from governance.services.sync import datasource_sync

    dba(dbname, *rows)
    source = register_target(name, dbname, owner=owner, default_classification=classifications["confidential"])
    datasource_sync(source=source)
    return source


def confirm_email_tag(source: Any, schema: str, table: str, column: str) -> None:
    """The steward's confirmed email tag on a column (what identifier suggestions start from)."""
    from governance.models import Column, ColumnTag, TagStatus

    col = Column.objects.get(dataset__source=source, dataset__schema=schema, dataset__name=table, name=column)
    ColumnTag.objects.update_or_create(column=col, tag="email", defaults={"status": TagStatus.CONFIRMED})


@pytest.fixture
def shop(shop_dbname: str, classifications: Any, owner: Any) -> Any:
    source = _source(f"shop_{RUN}", shop_dbname, SHOP_ROWS, owner, classifications)
    confirm_email_tag(source, "shop", "customers", "email")
    return source


@pytest.fixture
def crm(crm_dbname: str, classifications: Any, owner: Any) -> Any:
    source = _source(f"crm_{RUN}", crm_dbname, CRM_ROWS, owner, classifications)
    confirm_email_tag(source, "crm", "customers", "email")
    confirm_email_tag(source, "crm", "events", "customer_email")
    return source


@pytest.fixture
def governed(shop: Any, crm: Any, owner: Any) -> tuple[Any, Any]:
    """Both sources with their relationships discovered and the e-mail identifiers confirmed by the owner."""
    from subjects.models import IdentifierKind, SubjectIdentifier
    from subjects.services.identifiers import identifiers_suggest, subject_identifier_decide

    for source in (shop, crm):
        identifiers_suggest(source=source)
    for ident in SubjectIdentifier.objects.filter(kind=IdentifierKind.EMAIL):
        subject_identifier_decide(identifier=ident, decision="confirm", actor=owner)
    return shop, crm


@pytest.fixture
def privacy(make_user: Callable[..., Any]) -> tuple[Any, Any]:
    """Two privacy officers: one creates, the other approves."""
    from django.contrib.auth.models import Group

    from accounts.roles import ensure_portal_groups

    if not Group.objects.filter(name=PRIVACY_OFFICERS).exists():
        ensure_portal_groups()
    return make_user("privacy1", PRIVACY_OFFICERS), make_user("privacy2", PRIVACY_OFFICERS)


def dataset(source: Any, schema: str, name: str) -> Any:
    from governance.models import Dataset

    return Dataset.objects.get(source=source, schema=schema, name=name)


def run_execution(pk: int, actor_pk: int) -> str:
    """What the worker runs for an execution the page or the API asked for, and the state it ends
    in. When a Celery worker of this test session (started by an earlier worker test) takes the
    published task first, this call is refused (the request is executing or ended already): then
    the worker's end is waited for. Either way the request was executed once."""
    from subjects.models import RequestState, SubjectRequest
    from subjects.tasks import execute_subject_request
    from tests.provisioning.conftest import wait_for

    outcome = execute_subject_request(pk, actor_pk)
    if outcome == "refused":
        waiting = (RequestState.APPROVED, RequestState.EXECUTING)
        wait_for(lambda: SubjectRequest.objects.get(pk=pk).state not in waiting, timeout=60)
        outcome = str(SubjectRequest.objects.get(pk=pk).state)
    return outcome
