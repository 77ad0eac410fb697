"""`seed_demo` builds a real warehouse, the demo people and a lived-in catalog, and is idempotent."""

from __future__ import annotations

import io
import secrets
from typing import Any

import psycopg2
import pytest
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command
from django.test import RequestFactory
from psycopg2 import sql

from accounts.models import User
from accounts.roles import GOVERNANCE_ADMINS, SECURITY_OFFICERS
from audit.models import AuditEvent
from governance.models import (
    AccessRequest,
    Approval,
    Column,
    ColumnTag,
    Dataset,
    DatasetUserObjectPermission,
    DataSource,
    Grant,
    RequestState,
    Role,
    RoleMembership,
    TagStatus,
)
from governance.policy import holds_dataset_perm
from tests.db import admin_connection, server_params

from .conftest import drop_database, unique_db_name

pytestmark = pytest.mark.django_db(transaction=True)

DEMO_PASSWORD = "demo-password-for-tests-only"
HOSTILE_TABLE = 'Order "Lines"; DROP TABLE x; --'


def portal_state() -> dict[str, Any]:
    """Every row seed_demo writes, every field; the source's sync timestamp and when discovery last
    looked at a tag aside (operational: each sync looks at undecided tags again)."""
    return {
        "sources": [
            {k: v for k, v in row.items() if k != "last_synced_at"}
            for row in DataSource.objects.order_by("pk").values()
        ],
        "datasets": list(Dataset.objects.order_by("pk").values()),
        "columns": list(Column.objects.order_by("pk").values()),
        "tags": [
            {k: v for k, v in row.items() if k != "evaluated_at"} for row in ColumnTag.objects.order_by("pk").values()
        ],
        "users": list(User.objects.order_by("pk").values()),
        "groups": sorted(User.groups.through.objects.values_list("user_id", "group_id")),
        "perms": sorted(
            DatasetUserObjectPermission.objects.values_list("user_id", "permission_id", "content_object_id")
        ),
        "requests": list(AccessRequest.objects.order_by("pk").values()),
        "approvals": list(Approval.objects.order_by("pk").values()),
        "grants": list(Grant.objects.order_by("pk").values()),
        "audit": AuditEvent.objects.count(),
    }


@pytest.fixture
def warehouse_name(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("DEMO_PASSWORD", DEMO_PASSWORD)
    name = unique_db_name()
    yield name
    drop_database(name)


def test_seed_demo_twice(warehouse_name, classifications):
    first = io.StringIO()
    # Provisioning off: a worker left running by other tests must not change rows between the runs.
    call_command("seed_demo", "--warehouse-db", warehouse_name, "--no-provisioning", stdout=first)
    state = portal_state()

    second = io.StringIO()
    call_command("seed_demo", "--warehouse-db", warehouse_name, "--no-provisioning", stdout=second)

    assert portal_state() == state, "the second run changes nothing"
    assert f"warehouse {warehouse_name}: created, 10 tables filled" in first.getvalue()
    assert f"warehouse {warehouse_name}: exists, 0 tables filled" in second.getvalue()
    assert "sync: 0 datasets created, 0 updated" in second.getvalue()
    assert "access requests: the analyst has some; none added" in second.getvalue()

    # The people can sign in, with their duties.
    for username in ("admin", "analyst", "owner", "steward", "officer", "auditor"):
        assert authenticate(RequestFactory().post("/accounts/login/"), username=username, password=DEMO_PASSWORD), (
            username
        )
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.groups.filter(name=GOVERNANCE_ADMINS).exists()
    assert User.objects.get(username="officer").groups.filter(name=SECURITY_OFFICERS).exists()

    # The catalog: every table, the view, and the hostile name exactly as PostgreSQL spells it.
    source = DataSource.objects.get(name="demo_warehouse")
    assert source.database == warehouse_name and source.owner is not None and source.owner.username == "owner"
    names = set(Dataset.objects.filter(source=source).values_list("schema", "name"))
    assert ("finance", HOSTILE_TABLE) in names and ("sales", "customer_revenue") in names
    assert len(names) == 12
    classified = dict(Dataset.objects.filter(source=source).values_list("name", "classification__slug"))
    # The view nobody classified reads the Restricted HR table: it is Restricted, and the names it
    # shows are PII carried over from hr.employees.
    directory = Dataset.objects.get(source=source, schema="reporting", name="team_directory")
    assert classified["team_directory"] == "restricted" and directory.declared_classification.slug == "internal"
    assert set(directory.columns.filter(inherited_tags__len__gt=0).values_list("name", flat=True)) >= {
        "first_name",
        "last_name",
    }
    assert classified["employees"] == "restricted" and classified["medical_leave"] == "restricted"
    assert classified["customers"] == "confidential" and classified[HOSTILE_TABLE] == "confidential"
    assert classified["campaigns"] == "public" and classified["web_sessions"] == "internal"

    confirmed = set(
        ColumnTag.objects.filter(status=TagStatus.CONFIRMED).values_list("column__dataset__name", "column__name", "tag")
    )
    assert {
        ("customers", "full_name", "person_name"),
        ("customers", "email", "email"),
        ("customers", "phone", "phone"),
        ("customers", "card_number", "card_number"),
        ("employees", "ssn", "ssn"),
        ("employees", "date_of_birth", "date_of_birth"),
        ("employees", "iban", "iban"),
        ("medical_leave", "diagnosis", "phi"),
    } <= confirmed
    # In marketing, which the steward looks after too, discovery's suggestion waits for their review
    # (README tour, step 2: the Suggestions page).
    ip = ColumnTag.objects.get(column__name="ip_address")
    assert ip.status == TagStatus.SUGGESTED
    assert holds_dataset_perm(User.objects.get(username="steward"), ip.column.dataset, "steward_dataset")

    states = dict(AccessRequest.objects.filter(requester__username="analyst").values_list("dataset__name", "state"))
    assert states == {
        "employees": RequestState.PENDING,
        "campaigns": RequestState.APPROVED,
        "customers": RequestState.APPROVED,
        "ledger": RequestState.DENIED,
        "invoices": RequestState.CANCELLED,
    }
    assert AccessRequest.objects.get(dataset__name="employees").current_stage == "owner"
    assert Grant.objects.filter(grantee_user__username="analyst").count() == 2
    # Access roles for the matrix: approved grants, one request left pending, the analyst a member.
    assert set(Role.objects.values_list("name", flat=True)) == {"Analysts", "Finance BI", "ETL pipeline"}
    assert Grant.objects.filter(grantee_role__isnull=False).count() == 8
    pending = AccessRequest.objects.get(grantee_role__name="ETL pipeline", state=RequestState.PENDING)
    assert (pending.dataset.name, pending.level) == ("ledger", "write")
    assert RoleMembership.objects.filter(role__name="Analysts", user__username="analyst").exists()
    assert "roles: already there; none added" in second.getvalue()


def test_seed_demo_needs_a_password(monkeypatch, classifications):
    monkeypatch.delenv("DEMO_PASSWORD", raising=False)
    with pytest.raises(CommandError, match=r"^Set DEMO_PASSWORD to the password the demo users should sign in with\.$"):
        call_command("seed_demo", "--warehouse-db", "gov_t_never_created")
    assert not User.objects.exists()


def test_the_warehouse_seed_demo_creates_is_closed_to_public(warehouse_name, classifications):
    """PostgreSQL gives PUBLIC (every role of the server) CONNECT on a new database: without the
    revoke, any login of the server, a JIT login the portal made for another database included,
    could connect to the demo warehouse. Only its owner (the portal's login, which keeps syncing it),
    superusers and roles granted CONNECT (the engine grants it to the roles it manages) may."""
    out = io.StringIO()
    call_command("seed_demo", "--warehouse-db", warehouse_name, "--no-provisioning", stdout=out)
    assert f"warehouse {warehouse_name}: only roles granted CONNECT may connect (PUBLIC's revoked)" in out.getvalue()
    assert Dataset.objects.filter(source__database=warehouse_name).count() == 12  # the portal's login syncs it

    role, password = f"gov_t_login_{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    admin = admin_connection()
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT has_database_privilege('public', %s, 'CONNECT')", [warehouse_name])
            assert cur.fetchone()[0] is False
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(role)), [password])
        as_role = {**server_params(warehouse_name), "user": role, "password": password}
        with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
            psycopg2.connect(**as_role).close()
        # What the engine's plan ends with for a role it manages: then, and only then, it connects.
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(warehouse_name), sql.Identifier(role)
                )
            )
        psycopg2.connect(**as_role).close()

        # A second run finds the database closed and says so; it does not reopen it.
        again = io.StringIO()
        call_command("seed_demo", "--warehouse-db", warehouse_name, "--no-provisioning", stdout=again)
        assert f"warehouse {warehouse_name}: only roles granted CONNECT may connect" in again.getvalue()
    finally:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(
                    sql.Identifier(warehouse_name), sql.Identifier(role)
                )
            )
            cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.close()


def test_seed_demo_leaves_an_existing_warehouse_open_to_public_as_it_was_and_says_so(warehouse_name, classifications):
    """A database that was there before is not seed_demo's to close (it may be someone's): the report
    says that PUBLIC may connect, and points at the fix."""
    from .conftest import create_database

    create_database(warehouse_name)
    out = io.StringIO()
    call_command("seed_demo", "--warehouse-db", warehouse_name, "--no-provisioning", stdout=out)
    assert f"warehouse {warehouse_name}: every role of the server may connect (PUBLIC has CONNECT)" in out.getvalue()
    admin = admin_connection()
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT has_database_privilege('public', %s, 'CONNECT')", [warehouse_name])
            assert cur.fetchone()[0] is True
    finally:
        admin.close()


def test_readme_tour_step_2_in_chromium(warehouse_name, classifications, page, live_server):
    """README, "A short tour", step 2, as written, on the demo: the steward's Suggestions show why and
    what confirming changes; confirming raises marketing.web_sessions to Confidential."""
    from playwright.sync_api import expect

    call_command("seed_demo", "--warehouse-db", warehouse_name, "--no-provisioning", stdout=io.StringIO())
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("steward")
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{live_server.url}/portal/")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Suggestions").click()
    ip = ColumnTag.objects.get(column__name="ip_address", column__dataset__name="web_sessions")
    row = page.locator(f"#tag-{ip.pk}")
    expect(row).to_contain_text("raises marketing.web_sessions from Internal to Confidential")
    expect(row).to_contain_text("sampled values")  # why: the share of the sample, never a value
    page.get_by_role("button", name="Confirm IP address on ip_address").click()
    expect(page.get_by_role("status")).to_contain_text("marketing.web_sessions is now Confidential (was Internal)")
    page.goto(f"{live_server.url}/portal/datasets/{ip.column.dataset_id}/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Confidential")
    expect(page.locator("#decided-tags")).to_contain_text("Confirmed")
    expect(page.locator("#decided-tags")).to_contain_text("steward")
