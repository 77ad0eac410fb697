"""`manage.py seed_demo [--warehouse-db NAME]`: a warehouse to govern, the people, and a lived-in portal.

Idempotent: every step looks before it writes, so a second run changes nothing (and writes no audit
event); it can be run on every `make run`. The warehouse (`governance/demo/warehouse.py`) is a real
PostgreSQL database on the same server as the portal, filled with deterministic data, so that catalog
sync, PII discovery and provisioning have something real to work on.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg2
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.models import User
from accounts.roles import (
    AUDITORS,
    GOVERNANCE_ADMINS,
    PRIVACY_OFFICERS,
    REQUESTERS,
    SECURITY_OFFICERS,
    ensure_portal_groups,
    on_call_group,
)
from audit import services as audit
from audit.context import cli_context
from governance.demo.warehouse import ensure_warehouse
from governance.errors import DomainError
from governance.models import AccessRequest, Classification, ColumnTag, Dataset, DataSource, TagStatus
from governance.policy import holds_dataset_perm
from governance.services.catalog import column_tag_confirm, dataset_steward_add, dataset_update, datasource_create
from governance.services.sync import datasource_sync

SOURCE_NAME = "demo_warehouse"


# --- the people -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoUser:
    username: str
    first_name: str
    last_name: str
    groups: tuple[str, ...]
    superuser: bool = False
    on_call: bool = False  # in the break-glass group (BREAK_GLASS_GROUP, a setting: resolved at run time)

    def group_names(self) -> list[str]:
        return [*self.groups, *([on_call_group()] if self.on_call else [])]


DEMO_USERS = (
    DemoUser("admin", "Ada", "Admin", (GOVERNANCE_ADMINS,), superuser=True),
    DemoUser("analyst", "Ana", "Lyst", (REQUESTERS,)),
    DemoUser("owner", "Owen", "Owner", (REQUESTERS,)),
    DemoUser("steward", "Stella", "Steward", (REQUESTERS,)),
    DemoUser("officer", "Otto", "Officer", (SECURITY_OFFICERS, PRIVACY_OFFICERS, REQUESTERS)),
    DemoUser("auditor", "Audrey", "Auditor", (AUDITORS,)),
    # The engineer on call: may break the glass (breakglass/, docs/break-glass.md).
    DemoUser("oncall", "Cal", "Oncall", (REQUESTERS,), on_call=True),
    # A second privacy officer: a data-subject request is approved by an officer other than its
    # creator (subjects/, docs/subjects.md), so the demo needs two (with `officer`).
    DemoUser("privacy", "Priya", "Privacy", (PRIVACY_OFFICERS, REQUESTERS)),
)
USER_FIELDS = ["username", "first_name", "last_name", "email", "is_staff", "is_superuser", "is_active"]

# Classification (by slug) per schema, with per-table exceptions.
SCHEMA_CLASSIFICATION = {"hr": "restricted", "sales": "confidential", "finance": "confidential"}
TABLE_CLASSIFICATION = {("marketing", "campaigns"): "public", ("marketing", "web_sessions"): "internal"}
STEWARDED_SCHEMAS = ("hr", "sales")
# Stewarded too, but what discovery suggested there is left for the steward to review (README tour).
REVIEWED_SCHEMAS = ("marketing",)


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
        groups = list(Group.objects.filter(name__in=spec.group_names()))
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
