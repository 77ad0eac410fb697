"""`manage.py seed_demo [--warehouse-db NAME]`: a warehouse to govern, the people, and a lived-in portal.

Idempotent: every step looks before it writes, so a second run changes nothing (and writes no audit
event); it can be run on every `make run`. The warehouse is a real PostgreSQL database on the same
server as the portal, filled with deterministic data (`random.Random(42)`), so that catalog sync, PII
discovery and (later) provisioning have something real to work on.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg2
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from psycopg2 import sql
from psycopg2.extras import execute_values

from accounts.models import User
from accounts.roles import AUDITORS, GOVERNANCE_ADMINS, REQUESTERS, SECURITY_OFFICERS, ensure_portal_groups
from audit import services as audit
from audit.context import cli_context
from governance.catalog.pii import luhn_valid
from governance.errors import DomainError
from governance.models import AccessRequest, Classification, ColumnTag, Dataset, DataSource, TagStatus
from governance.policy import holds_dataset_perm
from governance.services.catalog import column_tag_confirm, dataset_steward_add, dataset_update, datasource_create
from governance.services.sync import datasource_sync

SOURCE_NAME = "demo_warehouse"
HOSTILE_TABLE = 'Order "Lines"; DROP TABLE x; --'
ROWS = 50
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


# --- the people -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoUser:
    username: str
    first_name: str
    last_name: str
    groups: tuple[str, ...]
    superuser: bool = False


DEMO_USERS = (
    DemoUser("admin", "Ada", "Admin", (GOVERNANCE_ADMINS,), superuser=True),
    DemoUser("analyst", "Ana", "Lyst", (REQUESTERS,)),
    DemoUser("owner", "Owen", "Owner", (REQUESTERS,)),
    DemoUser("steward", "Stella", "Steward", (REQUESTERS,)),
    DemoUser("officer", "Otto", "Officer", (SECURITY_OFFICERS, REQUESTERS)),
    DemoUser("auditor", "Audrey", "Auditor", (AUDITORS,)),
)
USER_FIELDS = ["username", "first_name", "last_name", "email", "is_staff", "is_superuser", "is_active"]

# Classification (by slug) per schema, with per-table exceptions.
SCHEMA_CLASSIFICATION = {"hr": "restricted", "sales": "confidential", "finance": "confidential"}
TABLE_CLASSIFICATION = {("marketing", "campaigns"): "public", ("marketing", "web_sessions"): "internal"}
STEWARDED_SCHEMAS = ("hr", "sales")
# Stewarded too, but what discovery suggested there is left for the steward to review (README tour).
REVIEWED_SCHEMAS = ("marketing",)


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


def demo_row_filter(source: DataSource, actor: User) -> str:
    """A row filter the analyst can ask for on sales.customers (docs/privacy.md "Row filters"). Made
    before the requests: defining a dataset's first filter changes the plans of its pending requests."""
    from governance.services.row_filters import row_filter_define

    dataset = Dataset.objects.get(source=source, schema="sales", name="customers")
    if dataset.row_filters.filter(name="EU customers").exists():
        return "'EU customers' already defined"
    made = row_filter_define(
        dataset=dataset, name="EU customers", expression="country IN ('DE', 'FR', 'IE', 'NL')", actor=actor
    )
    return f"{made.name!r} on {dataset.qualified_name}"


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


# --- the portal -----------------------------------------------------------------------------------


@dataclass
class SeedReport:
    lines: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.lines.append(text)


def ensure_user(spec: DemoUser, password: str) -> tuple[User, str]:
    """Create or align one demo user; audited like an admin edit, and only when something changed."""
    with transaction.atomic():
        user = User.objects.select_for_update().filter(username=spec.username).first()
        wanted = {
            "first_name": spec.first_name,
            "last_name": spec.last_name,
            "email": f"{spec.username}@example.com",
            "is_staff": True,
            "is_superuser": spec.superuser,
            "is_active": True,
        }
        creating = user is None
        if user is None:
            user = User(username=spec.username)
            before: dict[str, Any] = {}
            groups_before: list[str] = []
        else:
            before = audit.snapshot(user, USER_FIELDS)
            groups_before = sorted(user.groups.values_list("name", flat=True))
        for key, value in wanted.items():
            setattr(user, key, value)
        changes = audit.diff(before, audit.snapshot(user, USER_FIELDS))
        # check_password() is the cheap way to stay quiet: no new hash, no event, when it still matches.
        password_changed = creating or not user.check_password(password)
        if password_changed:
            user.set_password(password)
            changes["password"] = [audit.REDACTED, audit.REDACTED]
        if changes:
            user.save()
        groups = list(Group.objects.filter(name__in=spec.groups))
        missing = [g for g in groups if g.name not in groups_before]
        if missing:
            user.groups.add(*missing)
            changes["groups"] = [groups_before, sorted({*groups_before, *(g.name for g in missing)})]
        if changes:
            audit.record(
                action="user.created" if creating else "user.updated",
                actor=None,
                target=user,
                changes=changes,
                reason="seed_demo",
            )
    status = "created" if creating else ("updated" if changes else "unchanged")
    return user, status


def ensure_source(dbname: str, admin: User, owner: User, provisioning: bool = True) -> tuple[DataSource, str]:
    existing = DataSource.objects.filter(name=SOURCE_NAME).first()
    if existing is not None:
        if existing.database != dbname:
            return existing, f"already registered (for database {existing.database!r}; left unchanged)"
        return existing, "already registered"
    db = settings.DATABASES["default"]
    host = str(db.get("HOST") or "")
    source = datasource_create(
        actor=admin,
        name=SOURCE_NAME,
        host=host,
        port=int(db.get("PORT") or 5432),
        database=dbname,
        username=str(db.get("USER") or ""),
        password=str(db.get("PASSWORD") or ""),
        # A Unix socket (no host, or a directory) has no TLS to negotiate.
        sslmode="disable" if not host or host.startswith("/") else "prefer",
        owner=owner,
        description="Demo warehouse (sales, HR, marketing, finance) created by seed_demo.",
        provisioning_enabled=provisioning,
    )
    return source, "registered"


def classify(source: DataSource, admin: User) -> int:
    """Set each demo dataset's (declared) classification; dataset_update is a no-op when it is already
    right. Views take the effective one from what they read (governance.services.lineage)."""
    wanted_slugs = {*SCHEMA_CLASSIFICATION.values(), *TABLE_CLASSIFICATION.values()}
    by_slug = {c.slug: c for c in Classification.objects.filter(slug__in=wanted_slugs)}
    changed = 0
    for dataset in Dataset.objects.filter(source=source, is_present=True).select_related("declared_classification"):
        slug = TABLE_CLASSIFICATION.get((dataset.schema, dataset.name)) or SCHEMA_CLASSIFICATION.get(dataset.schema)
        if slug is None or slug not in by_slug or dataset.declared_classification.slug == slug:
            continue
        dataset_update(dataset=dataset, actor=admin, classification=by_slug[slug], reason="seed_demo")
        changed += 1
    return changed


def appoint_and_confirm(source: DataSource, admin: User, steward: User) -> tuple[int, int]:
    """The steward looks after hr and sales and confirms what discovery suggested there."""
    added = confirmed = 0
    for dataset in Dataset.objects.filter(
        source=source, schema__in=STEWARDED_SCHEMAS + REVIEWED_SCHEMAS, is_present=True
    ):
        if not holds_dataset_perm(steward, dataset, "steward_dataset"):
            dataset_steward_add(dataset=dataset, user=steward, actor=admin)
            added += 1
        if dataset.schema in REVIEWED_SCHEMAS:
            continue
        for tag in ColumnTag.objects.filter(column__dataset=dataset, status=TagStatus.SUGGESTED):
            column_tag_confirm(tag=tag, actor=steward)
            confirmed += 1
    return added, confirmed


def create_requests(source: DataSource, users: dict[str, User]) -> int:
    """A few requests in every state, once: skipped when the analyst already has any."""
    from governance.services.requests import (
        access_request_approve,
        access_request_cancel,
        access_request_deny,
        access_request_submit,
    )

    analyst, owner = users["analyst"], users["owner"]
    if AccessRequest.objects.filter(requester=analyst).exists():
        return 0

    def dataset(schema: str, name: str) -> Dataset:
        return Dataset.objects.get(source=source, schema=schema, name=name)

    days = dt.timedelta(days=1)
    steps: list[Callable[[], Any]] = [
        # Restricted: waits for the owner, then a security officer.
        lambda: access_request_submit(
            requester=analyst,
            dataset=dataset("hr", "employees"),
            duration=14 * days,
            justification="Headcount and tenure analysis for the quarterly workforce report.",
        ),
        # Public: approved by policy at once.
        lambda: access_request_submit(requester=analyst, dataset=dataset("marketing", "campaigns"), duration=30 * days),
        lambda: access_request_approve(
            access_request=access_request_submit(
                requester=analyst,
                dataset=dataset("sales", "customers"),
                duration=30 * days,
                justification="Churn model: customer attributes joined to order history.",
            ),
            approver=owner,
            comment="OK for the churn project; delete extracts when done.",
        ),
        lambda: access_request_deny(
            access_request=access_request_submit(
                requester=analyst,
                dataset=dataset("finance", "ledger"),
                duration=30 * days,
                justification="Curious about cloud spend.",
            ),
            approver=owner,
            comment="The ledger is for finance staff; the monthly cost report covers cloud spend.",
        ),
        lambda: access_request_cancel(
            access_request=access_request_submit(
                requester=analyst,
                dataset=dataset("finance", "invoices"),
                duration=30 * days,
                justification="Reconcile invoices against orders.",
            ),
            actor=analyst,
            reason="Found the figures in the sales dashboard instead.",
        ),
    ]
    for step in steps:
        step()
    return len(steps)


# Access roles for the permission matrix: (name, kind, members, [(schema, table, level, days)]).
# The last entry of the ETL pipeline is left waiting for the owner, so the matrix has a pending cell.
DEMO_ROLES: tuple[tuple[str, str, tuple[str, ...], tuple[tuple[str, str, str, int], ...]], ...] = (
    (
        "Analysts",
        "human",
        ("analyst",),
        (
            ("sales", "orders", "read", 60),
            ("marketing", "web_sessions", "read", 60),
            ("marketing", "campaigns", "read", 90),
        ),
    ),
    (
        "Finance BI",
        "human",
        (),
        (("finance", "ledger", "read", 5), ("finance", "invoices", "read", 30), ("sales", "orders", "read", 30)),
    ),
    (
        "ETL pipeline",
        "service",
        (),
        (
            ("sales", "order_items", "write", 90),
            ("finance", "invoices", "write", 90),
            ("finance", "ledger", "write", 30),
        ),
    ),
)


def create_roles(source: DataSource, users: dict[str, User]) -> int:
    """Access roles with members and approved grants, once: skipped when the first role exists."""
    from governance.models import ApprovalStage, RequestState, Role
    from governance.services.requests import access_request_approve, access_request_submit
    from governance.services.roles import role_create, role_member_add

    if Role.objects.filter(name=DEMO_ROLES[0][0]).exists():
        return 0
    admin = users["admin"]
    deciders: dict[str, User] = {ApprovalStage.OWNER: users["owner"], ApprovalStage.SECURITY_OFFICER: users["officer"]}
    made = 0
    for r, (name, kind, members, access) in enumerate(DEMO_ROLES):
        role = role_create(actor=admin, name=name, kind=kind, owner=admin, description=f"Demo role: {name}.")
        for username in members:
            role_member_add(role=role, user=users[username], actor=admin, reason="seed_demo")
        for i, (schema, table, level, days) in enumerate(access):
            req = access_request_submit(
                requester=admin,
                dataset=Dataset.objects.get(source=source, schema=schema, name=table),
                grantee_role=role,
                level=level,
                duration=dt.timedelta(days=days),
                justification=f"{name}: standing access to {schema}.{table}.",
            )
            made += 1
            if r == len(DEMO_ROLES) - 1 and i == len(access) - 1:
                continue  # left pending
            while req.state == RequestState.PENDING:
                req = access_request_approve(access_request=req, approver=deciders[req.current_stage], comment="demo")
    return made


class Command(BaseCommand):
    help = "Create a demo warehouse database, demo users, register and sync it, and seed a few requests (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--warehouse-db", default="demo_warehouse", help="Name of the warehouse database to create and govern."
        )
        parser.add_argument(
            "--no-provisioning",
            action="store_true",
            help="Register the warehouse with provisioning off (grants recorded, not applied).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        password = os.environ.get("DEMO_PASSWORD", "")
        if not password:
            raise CommandError("Set DEMO_PASSWORD to the password the demo users should sign in with.")
        dbname = options["warehouse_db"]
        report = SeedReport()
        with cli_context("seed_demo"):
            try:
                created, filled, public_connects = ensure_warehouse(dbname)
            except psycopg2.Error as exc:
                message = " ".join(str(exc).split())
                raise CommandError(f"Could not create the warehouse database {dbname!r}: {message}") from None
            report.add(f"warehouse {dbname}: {'created' if created else 'exists'}, {filled} tables filled")
            report.add(
                f"warehouse {dbname}: every role of the server may connect (PUBLIC has CONNECT); revoke it as "
                "docs/security.md shows"
                if public_connects
                else f"warehouse {dbname}: only roles granted CONNECT may connect (PUBLIC's revoked)"
            )

            ensure_portal_groups()
            users: dict[str, User] = {}
            statuses: dict[str, int] = {}
            for spec in DEMO_USERS:
                users[spec.username], status = ensure_user(spec, password)
                statuses[status] = statuses.get(status, 0) + 1
            report.add("users: " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())))

            try:
                source, status = ensure_source(
                    dbname, users["admin"], users["owner"], provisioning=not options["no_provisioning"]
                )
                report.add(f"data source {source.name}: {status}")
                result = datasource_sync(source=source, actor=users["admin"])
                report.add(f"sync: {result.summary()}")
                report.add(f"classifications changed: {classify(source, users['admin'])}")
                added, confirmed = appoint_and_confirm(source, users["admin"], users["steward"])
                report.add(f"stewards appointed: {added}; PII tags confirmed: {confirmed}")
                report.add(f"row filter: {demo_row_filter(source, users['admin'])}")
                made = create_requests(source, users)
                report.add(
                    f"access requests created: {made}" if made else "access requests: the analyst has some; none added"
                )
                roles = create_roles(source, users)
                report.add(f"role requests created: {roles}" if roles else "roles: already there; none added")
            except DomainError as exc:
                raise CommandError(exc.message) from None
        for line in report.lines:
            self.stdout.write(line)
