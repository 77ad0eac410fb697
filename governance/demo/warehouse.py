"""The demo warehouse: a real PostgreSQL database with deterministic data (`random.Random(42)`) for
`manage.py seed_demo` and the other demo seeds to govern: sales, HR, marketing and finance schemas,
PII of every kind discovery knows, a view over the Restricted HR table in an unclassified schema,
and a table with a hostile name. Static DDL (no value formatted into it); re-runnable."""

from __future__ import annotations

import datetime as dt
import random
import unicodedata
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import psycopg2
from django.conf import settings
from psycopg2 import sql
from psycopg2.extras import execute_values

from governance.catalog.pii import luhn_valid

HOSTILE_TABLE = 'Order "Lines"; DROP TABLE x; --'
ROWS = 50
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


# --- the warehouse --------------------------------------------------------------------------------

# Static DDL: no value is formatted into it. IF NOT EXISTS / OR REPLACE make it safe to re-run.
WAREHOUSE_DDL: tuple[str, ...] = (
    "CREATE SCHEMA IF NOT EXISTS sales",
    "CREATE SCHEMA IF NOT EXISTS hr",
    "CREATE SCHEMA IF NOT EXISTS marketing",
    "CREATE SCHEMA IF NOT EXISTS finance",
    """CREATE TABLE IF NOT EXISTS sales.customers (
        customer_id integer PRIMARY KEY,
        full_name text NOT NULL,
        email text NOT NULL,
        phone text,
        card_number text,
        country char(2) NOT NULL,
        created_at timestamptz NOT NULL
    )""",
    "COMMENT ON TABLE sales.customers IS 'People who bought from the web shop.'",
    """CREATE TABLE IF NOT EXISTS sales.orders (
        order_id bigint PRIMARY KEY,
        order_number text NOT NULL,
        customer_id integer NOT NULL REFERENCES sales.customers,
        ordered_at timestamptz NOT NULL,
        status text NOT NULL,
        total_amount numeric(12, 2) NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS sales.order_items (
        order_id bigint NOT NULL REFERENCES sales.orders,
        line_no integer NOT NULL,
        sku text NOT NULL,
        quantity integer NOT NULL,
        unit_price numeric(12, 2) NOT NULL,
        PRIMARY KEY (order_id, line_no)
    )""",
    """CREATE OR REPLACE VIEW sales.customer_revenue AS
        SELECT c.customer_id, c.country, count(o.order_id) AS order_count,
               coalesce(sum(o.total_amount), 0) AS revenue
          FROM sales.customers c LEFT JOIN sales.orders o ON o.customer_id = c.customer_id
         GROUP BY c.customer_id, c.country""",
    "COMMENT ON VIEW sales.customer_revenue IS 'Revenue per customer, for account managers.'",
    """CREATE TABLE IF NOT EXISTS hr.employees (
        employee_id integer PRIMARY KEY,
        first_name text NOT NULL,
        last_name text NOT NULL,
        ssn text NOT NULL,
        date_of_birth date NOT NULL,
        iban text NOT NULL,
        salary numeric(12, 2) NOT NULL,
        department text NOT NULL,
        hired_on date NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS hr.medical_leave (
        leave_id integer PRIMARY KEY,
        employee_id integer NOT NULL REFERENCES hr.employees,
        diagnosis text NOT NULL,
        starts_on date NOT NULL,
        ends_on date NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS marketing.campaigns (
        campaign_id integer PRIMARY KEY,
        name text NOT NULL,
        channel text NOT NULL,
        budget numeric(12, 2) NOT NULL,
        starts_on date NOT NULL,
        ends_on date NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS marketing.web_sessions (
        session_id text PRIMARY KEY,
        ip_address inet NOT NULL,
        user_agent text NOT NULL,
        started_at timestamptz NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS finance.invoices (
        invoice_id integer PRIMARY KEY,
        invoice_number text NOT NULL,
        customer_id integer NOT NULL,
        amount numeric(12, 2) NOT NULL,
        currency char(3) NOT NULL,
        issued_on date NOT NULL,
        due_on date NOT NULL,
        status text NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS finance.ledger (
        entry_id integer PRIMARY KEY,
        account_code text NOT NULL,
        memo text NOT NULL,
        debit numeric(12, 2) NOT NULL,
        credit numeric(12, 2) NOT NULL,
        posted_on date NOT NULL
    )""",
    # A view in a schema nobody classified, over the Restricted HR table: the portal judges it by what
    # it reads (Restricted, with the employees' names carried over as PII), not by its own default.
    "CREATE SCHEMA IF NOT EXISTS reporting",
    """CREATE OR REPLACE VIEW reporting.team_directory AS
        SELECT e.employee_id, e.first_name, e.last_name, e.department, e.hired_on
          FROM hr.employees e""",
    "COMMENT ON VIEW reporting.team_directory IS 'Who works in which team, for the intranet.'",
)

_FIRST = (
    "Alice Bruno Chloé Dmitri Emma Farid Grace Hiro Inès Jonas Keira Liam Maya Noah Olga Pedro Quinn Rosa Sven Tara"
)
_LAST = (
    "Anderson Becker Costa Dubois Evans Fischer García Hansen Ivanova Jensen Kowalski Larsen Moreau Nakamura "
    "O'Brien Petrov Rossi Schmidt Tanaka Weber"
)
FIRST_NAMES = tuple(_FIRST.split())
LAST_NAMES = tuple(_LAST.split())
COUNTRIES = ("US", "GB", "DE", "FR", "NL", "ES", "IT", "SE")
DEPARTMENTS = ("Engineering", "Finance", "Sales", "Marketing", "Support", "People")
DIAGNOSES = (
    "Influenza (J11.1)",
    "Lower back pain (M54.5)",
    "Migraine (G43.9)",
    "Fractured wrist (S62.1)",
    "Acute bronchitis (J20.9)",
    "Burnout (Z73.0)",
    "Gastroenteritis (A09)",
    "Sprained ankle (S93.4)",
)
CHANNELS = ("email", "search", "social", "display", "partner")
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
)


def _ascii(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if c.isascii() and c.isalnum()).lower()


def _luhn_complete(partial: str) -> str:
    return next(partial + d for d in "0123456789" if luhn_valid(partial + d))


def _luhn_break(number: str) -> str:
    """The same digits with a last digit that fails Luhn: an order number, not a card."""
    if not luhn_valid(number):
        return number
    return number[:-1] + str((int(number[-1]) + 1) % 10)


def _iban(country: str, bban: str) -> str:
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


def _at(rng: random.Random, days: int = 365) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=rng.randint(0, days * 86400))


def _day(rng: random.Random, start: dt.date, days: int) -> dt.date:
    return start + dt.timedelta(days=rng.randint(0, days))


def _money(rng: random.Random, low: int, high: int) -> Decimal:
    return Decimal(rng.randint(low * 100, high * 100)) / 100


def warehouse_rows(rng: random.Random) -> dict[tuple[str, str], tuple[Sequence[str], list[tuple[Any, ...]]]]:
    """Every table's columns and rows, generated in a fixed order from one seeded generator."""
    data: dict[tuple[str, str], tuple[Sequence[str], list[tuple[Any, ...]]]] = {}

    customers = []
    for i in range(1, ROWS + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        email = f"{_ascii(first)}.{_ascii(last)}{i}@example.com"
        area = rng.choice(("415", "212", "312", "617"))
        phone = f"+1 {area} 555 {rng.randint(100, 199):04d}" if i % 3 else f"({area}) 555-{rng.randint(100, 199):04d}"
        card = _luhn_complete("4" + "".join(str(rng.randint(0, 9)) for _ in range(14)))
        card = " ".join(card[k : k + 4] for k in range(0, 16, 4)) if i % 2 else card
        customers.append((i, f"{first} {last}", email, phone, card, rng.choice(COUNTRIES), _at(rng)))
    data[("sales", "customers")] = (
        ("customer_id", "full_name", "email", "phone", "card_number", "country", "created_at"),
        customers,
    )

    orders = []
    for i in range(1, ROWS + 1):
        number = _luhn_break("40" + "".join(str(rng.randint(0, 9)) for _ in range(14)))
        orders.append(
            (
                1000 + i,
                number,
                rng.randint(1, ROWS),
                _at(rng),
                rng.choice(("paid", "shipped", "refunded")),
                _money(rng, 10, 900),
            )
        )
    data[("sales", "orders")] = (
        ("order_id", "order_number", "customer_id", "ordered_at", "status", "total_amount"),
        orders,
    )

    items = [
        (1000 + i, 1 + (i % 2), f"SKU-{rng.randint(1000, 9999)}", rng.randint(1, 5), _money(rng, 2, 200))
        for i in range(1, ROWS + 1)
    ]
    data[("sales", "order_items")] = (("order_id", "line_no", "sku", "quantity", "unit_price"), items)

    employees = []
    for i in range(1, ROWS + 1):
        ssn = f"{rng.randint(1, 665):03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
        bban = "".join(str(rng.randint(0, 9)) for _ in range(18))
        iban = _iban("DE", bban)
        iban = " ".join(iban[k : k + 4] for k in range(0, len(iban), 4)) if i % 2 else iban
        employees.append(
            (
                i,
                rng.choice(FIRST_NAMES),
                rng.choice(LAST_NAMES),
                ssn,
                _day(rng, dt.date(1960, 1, 1), 40 * 365),
                iban,
                _money(rng, 40_000, 160_000),
                rng.choice(DEPARTMENTS),
                _day(rng, dt.date(2010, 1, 1), 14 * 365),
            )
        )
    data[("hr", "employees")] = (
        (
            "employee_id",
            "first_name",
            "last_name",
            "ssn",
            "date_of_birth",
            "iban",
            "salary",
            "department",
            "hired_on",
        ),
        employees,
    )

    leave = []
    for i in range(1, ROWS + 1):
        start = _day(rng, dt.date(2023, 1, 1), 600)
        leave.append((i, rng.randint(1, ROWS), rng.choice(DIAGNOSES), start, start + dt.timedelta(rng.randint(1, 20))))
    data[("hr", "medical_leave")] = (("leave_id", "employee_id", "diagnosis", "starts_on", "ends_on"), leave)

    campaigns = []
    for i in range(1, ROWS + 1):
        start = _day(rng, dt.date(2024, 1, 1), 300)
        season = rng.choice(("Spring", "Summer", "Autumn", "Winter"))
        campaigns.append(
            (
                i,
                f"{season} sale #{i}",
                rng.choice(CHANNELS),
                _money(rng, 500, 50_000),
                start,
                start + dt.timedelta(days=rng.randint(7, 60)),
            )
        )
    data[("marketing", "campaigns")] = (("campaign_id", "name", "channel", "budget", "starts_on", "ends_on"), campaigns)

    sessions = []
    for i in range(1, ROWS + 1):
        if i % 4 == 0:
            ip = f"2001:db8::{rng.randint(1, 0xFFFF):x}"
        else:
            ip = f"{rng.choice(('192.0.2', '198.51.100', '203.0.113'))}.{rng.randint(1, 254)}"
        sessions.append((f"s-{rng.getrandbits(64):016x}", ip, rng.choice(USER_AGENTS), _at(rng)))
    data[("marketing", "web_sessions")] = (("session_id", "ip_address", "user_agent", "started_at"), sessions)

    invoices = []
    for i in range(1, ROWS + 1):
        issued = _day(rng, dt.date(2024, 1, 1), 300)
        invoices.append(
            (
                i,
                f"INV-2024-{i:04d}",
                rng.randint(1, ROWS),
                _money(rng, 50, 5000),
                rng.choice(("EUR", "USD", "GBP")),
                issued,
                issued + dt.timedelta(days=30),
                rng.choice(("open", "paid", "overdue")),
            )
        )
    data[("finance", "invoices")] = (
        ("invoice_id", "invoice_number", "customer_id", "amount", "currency", "issued_on", "due_on", "status"),
        invoices,
    )

    ledger = []
    for i in range(1, ROWS + 1):
        amount = _money(rng, 10, 10_000)
        debit = rng.random() < 0.5
        ledger.append(
            (
                i,
                rng.choice(("1000", "1200", "2000", "4000", "6100", "6200")),
                rng.choice(("Office rent", "Cloud hosting", "Travel", "Licences", "Customer payment", "Payroll")),
                amount if debit else Decimal("0.00"),
                Decimal("0.00") if debit else amount,
                _day(rng, dt.date(2024, 1, 1), 360),
            )
        )
    data[("finance", "ledger")] = (("entry_id", "account_code", "memo", "debit", "credit", "posted_on"), ledger)

    lines = [(i, 1000 + rng.randint(1, ROWS), f"Line {i} of a hostile name", _money(rng, 1, 300)) for i in range(1, 11)]
    data[("finance", HOSTILE_TABLE)] = (("line_id", "order_id", "description", "amount"), lines)
    return data


def server_params(dbname: str) -> dict[str, Any]:
    """Connection keywords for `dbname` on the portal's own PostgreSQL server."""
    db = settings.DATABASES["default"]
    params: dict[str, Any] = {"dbname": dbname, "connect_timeout": settings.TARGET_CONNECT_TIMEOUT}
    for key, param in (("HOST", "host"), ("PORT", "port"), ("USER", "user"), ("PASSWORD", "password")):
        if db.get(key):
            params[param] = db[key]
    return params


def ensure_warehouse(dbname: str) -> tuple[bool, int, bool]:
    """Create the warehouse database, its schemas and tables, and fill empty tables.

    Returns (database created, tables filled, PUBLIC may connect). CREATE DATABASE cannot run in a
    transaction, hence the autocommit admin connection; the DDL and rows then go in one transaction
    of their own.

    A database this run creates is closed to PUBLIC at once: PostgreSQL gives PUBLIC (every role of
    the cluster) CONNECT on each new database, and the demo's own roles would keep that. The portal's
    login created it, so it owns it and keeps connecting; the roles the portal manages get CONNECT on
    it from the engine (every plan's `GRANT CONNECT ON DATABASE`), JIT logins through their principal,
    and nothing else of the cluster may connect (docs/security.md, "Who may connect"). A database that
    was already there is left as it is (it may be someone's): the report says if PUBLIC may connect.
    """
    admin = psycopg2.connect(**server_params(settings.DATABASES["default"]["NAME"]))
    created = False
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (dbname,))
            if cur.fetchone() is None:
                try:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
                    created = True
                except psycopg2.errors.DuplicateDatabase:
                    pass  # created by a concurrent run meanwhile: fine
            if created:
                cur.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dbname)))
            cur.execute("SELECT has_database_privilege('public', %s, 'CONNECT')", (dbname,))
            public_connects = bool(cur.fetchone()[0])
    finally:
        admin.close()

    filled = 0
    conn = psycopg2.connect(**server_params(dbname))
    try:
        with conn, conn.cursor() as cur:
            for statement in WAREHOUSE_DDL:
                cur.execute(statement)
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (line_id integer PRIMARY KEY, order_id bigint NOT NULL, "
                    "description text NOT NULL, amount numeric(12, 2) NOT NULL)"
                ).format(sql.Identifier("finance", HOSTILE_TABLE))
            )
            for (schema, table), (columns, rows) in warehouse_rows(random.Random(42)).items():  # noqa: S311
                target = sql.Identifier(schema, table)
                cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(target))
                if cur.fetchone()[0]:
                    continue
                insert = sql.SQL("INSERT INTO {} ({}) VALUES %s").format(
                    target, sql.SQL(", ").join(sql.Identifier(c) for c in columns)
                )
                execute_values(cur, insert, rows)
                filled += 1
    finally:
        conn.close()
    return created, filled, public_connects
