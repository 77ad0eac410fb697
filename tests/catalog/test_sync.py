"""Catalog sync against a real PostgreSQL target: upserts, idempotency, hostile names, vanishing,
PII suggestions, permissions, failures and the `catalog_sync` command.

These tests use `transaction=True`: the sync refuses to run inside a portal transaction (it waits on
the network), and the target is reached through a second connection anyway.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import psycopg2
import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from psycopg2 import sql

from audit.models import AuditEvent
from governance import crypto
from governance.catalog import introspect
from governance.catalog.sync import safe_error_message
from governance.errors import NotPermitted
from governance.models import Column, ColumnTag, Dataset, DataSource, TagStatus
from governance.policy import holds_dataset_perm
from governance.services import catalog as catalog_svc
from governance.services.sync import SyncFailed, datasource_sync

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE_SCHEMA = "Sales EU"
HOSTILE_TABLE = 'Order "Lines"; DROP TABLE x; --'
HOSTILE_COLUMN = 'Contact "Info"; --'

EMAILS = [f"person{i}@example.org" for i in range(30)]


def build_warehouse(target: Any) -> None:
    """Every kind of relation, comments, PII by name and by value, and hostile identifiers."""
    for statement in (
        "CREATE TABLE public.customers (id integer PRIMARY KEY, email text NOT NULL, full_name text, "
        "phone_count integer, created_at timestamptz)",
        "COMMENT ON TABLE public.customers IS 'Shop customers'",
        "COMMENT ON COLUMN public.customers.email IS 'Login address'",
        "CREATE TABLE public.x (id integer)",
        "CREATE VIEW public.customer_emails AS SELECT id, email FROM public.customers",
        "CREATE MATERIALIZED VIEW public.customer_count AS SELECT count(*) AS n FROM public.customers",
        "CREATE TABLE public.events (id bigint, happened_on date NOT NULL, client_ip inet) "
        "PARTITION BY RANGE (happened_on)",
        "CREATE TABLE public.events_2024 PARTITION OF public.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
        "CREATE FOREIGN DATA WRAPPER gov_t_fdw",
        "CREATE SERVER gov_t_srv FOREIGN DATA WRAPPER gov_t_fdw",
        "CREATE FOREIGN TABLE public.remote_people (id integer, email text) SERVER gov_t_srv",
        # Another session's temporary table lives in pg_temp_N: never part of the catalog.
        "CREATE TEMP TABLE scratch (email text)",
    ):
        target.run(statement)
    target.run(
        "INSERT INTO public.customers SELECT i, 'person' || i || '@example.org', 'Person ' || i, 0, now() "
        "FROM generate_series(1, 30) i"
    )
    target.run(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(HOSTILE_SCHEMA)))
    target.run(
        sql.SQL("CREATE TABLE {} ({} integer NOT NULL, {} text, amount numeric(12, 2))").format(
            sql.Identifier(HOSTILE_SCHEMA, HOSTILE_TABLE), sql.Identifier("Line No"), sql.Identifier(HOSTILE_COLUMN)
        )
    )
    target.run(sql.SQL("CREATE TABLE {} (id integer)").format(sql.Identifier(HOSTILE_SCHEMA, "x")))
    for i, email in enumerate(EMAILS):
        target.run(
            sql.SQL("INSERT INTO {} VALUES (%s, %s, 1.5)").format(sql.Identifier(HOSTILE_SCHEMA, HOSTILE_TABLE)),
            (i, email),
        )


def catalog_state(source: DataSource) -> dict[str, list[Any]]:
    """Every catalog row of the source, every field (updated_at included)."""
    return {
        "datasets": list(Dataset.objects.filter(source=source).order_by("pk").values()),
        "columns": list(Column.objects.filter(dataset__source=source).order_by("pk").values()),
        "tags": list(ColumnTag.objects.filter(column__dataset__source=source).order_by("pk").values()),
    }


@pytest.fixture
def warehouse(target_db: Any) -> Any:
    build_warehouse(target_db)
    return target_db


@pytest.fixture
def source(warehouse: Any, make_source: Any, owner: Any, classifications: Any) -> DataSource:
    return make_source(warehouse.name, owner=owner)


def tag_of(source: DataSource, schema: str, table: str, column: str) -> dict[str, str]:
    return dict(
        ColumnTag.objects.filter(
            column__dataset__source=source,
            column__dataset__schema=schema,
            column__dataset__name=table,
            column__name=column,
        ).values_list("tag", "status")
    )


def test_first_sync_builds_the_catalog(source, owner, gov_admin, classifications):
    result = datasource_sync(source=source, actor=gov_admin)

    kinds = {(d.schema, d.name): d.kind for d in Dataset.objects.filter(source=source)}
    assert kinds == {
        ("public", "customers"): "table",
        ("public", "x"): "table",
        ("public", "customer_emails"): "view",
        ("public", "customer_count"): "materialized_view",
        ("public", "events"): "partitioned_table",
        ("public", "remote_people"): "foreign_table",
        (HOSTILE_SCHEMA, HOSTILE_TABLE): "table",
        (HOSTILE_SCHEMA, "x"): "table",
    }, "partitions and other sessions' temp tables are not datasets"
    assert result.datasets_created == 8 and result.changed

    customers = Dataset.objects.get(source=source, schema="public", name="customers")
    assert customers.description == "Shop customers"
    assert customers.classification == classifications["internal"]
    assert customers.owner == owner and customers.is_present and customers.last_seen_at is not None
    assert holds_dataset_perm(owner, customers, "approve_access")
    assert holds_dataset_perm(owner, customers, "steward_dataset")
    columns = list(customers.columns.values_list("name", "data_type", "ordinal", "is_nullable", "description"))
    assert columns == [
        ("id", "integer", 1, False, ""),
        ("email", "text", 2, False, "Login address"),
        ("full_name", "text", 3, True, ""),
        ("phone_count", "integer", 4, True, ""),
        ("created_at", "timestamp with time zone", 5, True, ""),
    ]

    email = ColumnTag.objects.get(column__dataset=customers, column__name="email")
    assert (email.tag, email.status) == ("email", TagStatus.SUGGESTED)
    assert "name matches 'email'" in email.evidence and "100% of 30 sampled values" in email.evidence
    assert tag_of(source, "public", "customers", "full_name") == {"person_name": "suggested"}
    assert tag_of(source, "public", "customers", "phone_count") == {}, "a count of phones is not a phone"
    assert tag_of(source, "public", "events", "client_ip") == {"ip_address": "suggested"}
    assert tag_of(source, "public", "remote_people", "email") == {"email": "suggested"}  # by name, not sampled
    assert result.tags_suggested == ColumnTag.objects.count()

    source.refresh_from_db()
    assert source.last_synced_at is not None and source.last_sync_error == ""
    event = AuditEvent.objects.get(action="datasource.synced")
    assert event.actor == gov_admin and event.target_id == str(source.pk)
    assert event.metadata["datasets_created"] == 8
    assert event.metadata["columns_created"] == Column.objects.count()
    assert event.metadata["tags_suggested"] == result.tags_suggested


def test_second_sync_changes_nothing(source, gov_admin):
    datasource_sync(source=source, actor=gov_admin)
    before = catalog_state(source)
    events_before = AuditEvent.objects.count()

    result = datasource_sync(source=source, actor=gov_admin)

    assert not result.changed
    # Undecided suggestions and untagged text columns are looked at again (tests/catalog/
    # test_reevaluation.py); nothing differs, so only when discovery last looked moves.
    assert result.relations_sampled == 4 and result.columns_evaluated > 0
    after = catalog_state(source)
    moved = [(b["evaluated_at"], a["evaluated_at"]) for b, a in zip(before["tags"], after["tags"], strict=True)]
    assert all(new > old for old, new in moved)
    for state in (before, after):
        for tag in state["tags"]:
            tag.pop("evaluated_at")
    assert after == before
    assert AuditEvent.objects.count() == events_before
    assert "0 datasets created, 0 updated, 0 vanished" in result.summary()


def test_hostile_identifiers_round_trip(source, warehouse, gov_admin):
    datasource_sync(source=source, actor=gov_admin)

    hostile = Dataset.objects.get(source=source, schema=HOSTILE_SCHEMA, name=HOSTILE_TABLE)
    assert hostile.qualified_name == '"Sales EU"."Order ""Lines""; DROP TABLE x; --"'
    assert list(hostile.columns.values_list("name", flat=True)) == ["Line No", HOSTILE_COLUMN, "amount"]
    # Found by its values alone: the sample query reached the hostile table and column intact.
    tag = ColumnTag.objects.get(column__dataset=hostile, column__name=HOSTILE_COLUMN)
    assert tag.tag == "email" and tag.evidence.startswith("100% of 30 sampled values look like email")

    # Nothing was dropped on the target, and the names still resolve from the stored values.
    present = {
        (s, t)
        for s, t in warehouse.run(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_name IN ('x', %s)",
            (HOSTILE_TABLE,),
        )
    }
    assert present == {("public", "x"), (HOSTILE_SCHEMA, "x"), (HOSTILE_SCHEMA, HOSTILE_TABLE)}
    count = warehouse.run(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(hostile.schema, hostile.name)))
    assert count == [(30,)]


def test_vanished_tables_are_flagged_and_come_back(source, warehouse, gov_admin):
    datasource_sync(source=source, actor=gov_admin)
    x = Dataset.objects.get(source=source, schema="public", name="x")

    warehouse.run("DROP TABLE public.x")
    warehouse.run("ALTER TABLE public.customers DROP COLUMN full_name")
    result = datasource_sync(source=source, actor=gov_admin)

    x.refresh_from_db()
    assert not x.is_present and x.vanished_at is not None
    assert x.columns.count() == 1, "never deleted: grants and audit events point at it"
    assert (result.datasets_vanished, result.columns_vanished) == (1, 1)
    assert not Column.objects.get(dataset__name="customers", name="full_name").is_present
    vanished = AuditEvent.objects.get(action="dataset.vanished")
    assert vanished.target_id == str(x.pk) and vanished.changes == {"is_present": [True, False]}
    assert AuditEvent.objects.filter(action="datasource.synced").count() == 2

    warehouse.run("CREATE TABLE public.x (id integer)")
    warehouse.run("ALTER TABLE public.customers ADD COLUMN full_name text")
    result = datasource_sync(source=source, actor=gov_admin)

    x.refresh_from_db()
    assert x.is_present and x.vanished_at is None
    assert Dataset.objects.filter(source=source, name="x", schema="public").count() == 1
    full_name = Column.objects.get(dataset__name="customers", name="full_name")
    assert full_name.is_present and full_name.ordinal == 6  # a new attnum: the column was re-added
    assert (result.datasets_reappeared, result.columns_reappeared) == (1, 1)
    assert AuditEvent.objects.filter(action="dataset.reappeared", target_id=str(x.pk)).exists()


def test_type_change_updates_the_column(source, warehouse, gov_admin):
    datasource_sync(source=source, actor=gov_admin)
    warehouse.run("ALTER TABLE public.customers ALTER COLUMN phone_count TYPE text")
    warehouse.run("COMMENT ON TABLE public.customers IS 'Customers of the shop'")

    result = datasource_sync(source=source, actor=gov_admin)

    column = Column.objects.get(dataset__name="customers", name="phone_count")
    assert column.data_type == "text"
    assert Dataset.objects.get(source=source, name="customers").description == "Customers of the shop"
    assert (result.columns_updated, result.datasets_updated) == (1, 1)


def test_a_relation_that_cannot_be_sampled_falls_back_to_names(source, warehouse, gov_admin):
    datasource_sync(source=source, actor=gov_admin)
    warehouse.run(
        "CREATE MATERIALIZED VIEW public.pending AS SELECT email AS contact_email FROM public.customers WITH NO DATA"
    )

    result = datasource_sync(source=source, actor=gov_admin)

    assert result.datasets_created == 1 and list(result.sampling_failures) == ["public.pending"]
    assert "has not been populated" in result.sampling_failures["public.pending"]
    tag = ColumnTag.objects.get(column__dataset__name="pending", column__name="contact_email")
    assert (tag.tag, tag.evidence) == ("email", "name matches 'email'")
    event = AuditEvent.objects.filter(action="datasource.synced").latest("id")
    assert "public.pending" in event.metadata["sampling_failures"]


def test_unreadable_relations_make_one_summary_line_per_source_not_one_per_relation(
    source, warehouse, gov_admin, caplog
):
    datasource_sync(source=source, actor=gov_admin)
    for i in range(12):
        warehouse.run(f"CREATE MATERIALIZED VIEW public.pending_{i} AS SELECT email FROM public.customers WITH NO DATA")
    caplog.set_level(logging.INFO)

    result = datasource_sync(source=source, actor=gov_admin)

    assert len(result.sampling_failures) == 12
    lines = [r for r in caplog.records if r.name.startswith("governance")]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.WARNING
    message = lines[0].getMessage()
    assert message.startswith(f"catalog sync of {source.name}: 12 datasets created")
    assert "(12 relations could not be sampled)" in message and "'public.pending_0'" in message


def test_rejected_suggestion_is_not_suggested_again(source, warehouse, gov_admin, owner):
    datasource_sync(source=source, actor=gov_admin)
    tag = ColumnTag.objects.get(column__dataset__name="customers", column__name="email")
    catalog_svc.column_tag_reject(tag=tag, actor=owner)

    # Retyped within its kind and dropped/re-added: discovery looks at the column again, and the
    # data has not changed kind (tests/catalog/test_reevaluation.py has what reopens a rejection).
    warehouse.run("DROP VIEW public.customer_emails")
    warehouse.run("ALTER TABLE public.customers ALTER COLUMN email TYPE varchar(200)")
    result = datasource_sync(source=source, actor=gov_admin)
    assert result.columns_updated == 1 and result.tags_suggested == 0 and result.tags_reopened == 0
    warehouse.run("ALTER TABLE public.customers DROP COLUMN email")
    datasource_sync(source=source, actor=gov_admin)
    warehouse.run("ALTER TABLE public.customers ADD COLUMN email text")
    datasource_sync(source=source, actor=gov_admin)

    assert tag_of(source, "public", "customers", "email") == {"email": "rejected"}


def test_confirming_pii_raises_internal_dataset_to_confidential(source, gov_admin, owner, classifications):
    datasource_sync(source=source, actor=gov_admin)
    customers = Dataset.objects.get(source=source, name="customers", schema="public")
    assert customers.classification == classifications["internal"]
    tag = ColumnTag.objects.get(column__dataset=customers, column__name="email")

    catalog_svc.column_tag_confirm(tag=tag, actor=owner)

    customers.refresh_from_db()
    assert customers.classification == classifications["confidential"]
    raised = AuditEvent.objects.get(action="dataset.classification_raised", target_id=str(customers.pk))
    assert raised.changes == {
        "declared_classification": [classifications["internal"].pk, classifications["confidential"].pk]
    }


def test_sync_by_non_admin_is_denied_and_recorded(source, analyst):
    with pytest.raises(NotPermitted, match="governance admins"):
        datasource_sync(source=source, actor=analyst)
    assert not Dataset.objects.exists()
    denied = AuditEvent.objects.get(action="datasource.sync")
    assert denied.outcome == "denied" and denied.actor == analyst


def test_system_and_superuser_may_sync(source, superuser):
    assert datasource_sync(source=source).datasets_created == 8
    assert AuditEvent.objects.get(action="datasource.synced").actor is None
    assert not datasource_sync(source=source, actor=superuser).changed


def test_include_schemas_limits_the_sync_and_leaves_the_rest_alone(source, gov_admin):
    datasource_sync(source=source, actor=gov_admin)
    DataSource.objects.filter(pk=source.pk).update(include_schemas=[HOSTILE_SCHEMA])
    source.refresh_from_db()

    result = datasource_sync(source=source, actor=gov_admin)

    assert not result.changed, "datasets outside the included schemas are out of scope, not vanished"
    assert Dataset.objects.filter(source=source, is_present=True).count() == 8
    fresh = DataSource.objects.create(name="eu_only", host=source.host, port=source.port, database=source.database)
    DataSource.objects.filter(pk=fresh.pk).update(
        include_schemas=[HOSTILE_SCHEMA], username=source.username, password_encrypted=source.password_encrypted
    )
    fresh.refresh_from_db()
    datasource_sync(source=fresh, actor=gov_admin)
    assert set(Dataset.objects.filter(source=fresh).values_list("schema", flat=True)) == {HOSTILE_SCHEMA}


def test_default_classification_of_the_source_is_used(source, gov_admin, classifications):
    DataSource.objects.filter(pk=source.pk).update(default_classification=classifications["restricted"])
    source.refresh_from_db()
    datasource_sync(source=source, actor=gov_admin)
    assert set(Dataset.objects.values_list("classification__slug", flat=True)) == {"restricted"}


def test_unreachable_source_fails_cleanly(make_source, gov_admin, classifications):
    password = "s3cret-Pa55word-never-shown"
    source = make_source("nowhere", name="unreachable")
    DataSource.objects.filter(pk=source.pk).update(
        host="127.0.0.1", port=1, password_encrypted=crypto.encrypt(password)
    )
    source.refresh_from_db()

    with pytest.raises(SyncFailed) as caught:
        datasource_sync(source=source, actor=gov_admin)

    assert caught.value.code == "sync_failed" and caught.value.status == 502
    message = caught.value.message
    assert message.startswith("Could not sync unreachable:") and "\n" not in message
    assert password not in message
    source.refresh_from_db()
    assert source.last_sync_error == message and source.last_synced_at is None
    failed = AuditEvent.objects.get(action="datasource.sync")
    assert failed.outcome == "failed" and failed.reason == message and password not in str(failed.metadata)
    assert not Dataset.objects.exists()


def test_missing_database_fails_with_the_servers_reason(make_source, gov_admin, classifications):
    source = make_source("gov_t_does_not_exist", name="missing")
    with pytest.raises(SyncFailed, match="does not exist"):
        datasource_sync(source=source, actor=gov_admin)


def test_error_messages_never_carry_the_password():
    exc = Exception('invalid dsn: missing "=" after "host=db password=\'p@ss word\' x"\nsecond line')
    text = safe_error_message(exc, secrets=["p@ss word"])
    assert "p@ss" not in text and "\n" not in text
    assert "password=***" in safe_error_message(Exception("password=hunter2 dbname=x"))


def test_sync_refuses_to_run_inside_a_transaction(source, gov_admin):
    with transaction.atomic(), pytest.raises(RuntimeError, match=r"outside transaction\.atomic"):
        datasource_sync(source=source, actor=gov_admin)


def test_target_session_is_read_only_and_bounded(source):
    with introspect.connect(source) as conn, conn.cursor() as cur:
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone() == ("30s",)
        cur.execute("SHOW transaction_read_only")
        assert cur.fetchone() == ("on",)
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            cur.execute("CREATE TABLE public.should_not_exist (id integer)")


def test_sample_query_quotes_every_identifier(warehouse):
    query = introspect.sample_query(HOSTILE_SCHEMA, HOSTILE_TABLE, [HOSTILE_COLUMN])
    rendered = query.as_string(warehouse.conn)
    assert rendered == (
        'SELECT "Contact ""Info""; --"::text FROM "Sales EU"."Order ""Lines""; DROP TABLE x; --" LIMIT %s'
    )


def test_catalog_sync_command(source, gov_admin):
    out = io.StringIO()
    call_command("catalog_sync", source.name, "--actor", gov_admin.username, stdout=out)
    assert out.getvalue().startswith(f"{source.name}: 8 datasets created, 0 updated")
    event = AuditEvent.objects.get(action="datasource.synced")
    assert event.source == "cli" and event.actor == gov_admin


def test_catalog_sync_command_errors_are_one_line(source, gov_admin):
    DataSource.objects.create(name="another")
    with pytest.raises(CommandError) as caught:
        call_command("catalog_sync", "nope")
    assert str(caught.value) == "No data source named 'nope'. Known: another, warehouse"

    with pytest.raises(CommandError, match=r"^No user named 'ghost'\.$"):
        call_command("catalog_sync", source.name, "--actor", "ghost")

    DataSource.objects.filter(pk=source.pk).update(port=1, host="127.0.0.1")
    with pytest.raises(CommandError) as caught:
        call_command("catalog_sync", source.name)
    assert str(caught.value).startswith("Could not sync warehouse:") and "\n" not in str(caught.value)
