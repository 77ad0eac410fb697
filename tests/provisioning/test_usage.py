"""Last-used facts on a real target: pg_stat_statements read by the portal's least-privileged role,
statements parsed and resolved to tables, mapped back to the grants of the people who ran them.

Grants are applied in this process (no worker hears of them, as in test_job_queries.py); the
statements run in the target as a DBA who `SET ROLE`s to a login that is a member of the
grantee's role, the way a JIT login or a person's own login reaches a grant."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from psycopg2 import sql

from audit.models import AuditEvent
from governance.models import Dataset, DataSource, Grant, GrantStatus, GrantUsage, SourceUsage
from governance.provisioning import grant_principal
from governance.selectors.usage import UseState, last_use_for_grants
from governance.services.usage import usage_snapshot_all, usage_snapshot_take
from tests import tls_target
from tests.processes import free_port
from tests.provisioning.conftest import ROLE_PREFIX, RUN, admin_connection, dba, register_target
from tests.provisioning.test_job_queries import apply_job, approved, run_counted

pytestmark = pytest.mark.django_db(transaction=True)
HOSTILE = 'Order "Lines"; DROP TABLE x; --'


def run_as(dbname: str, role: str, *statements: str) -> None:
    """Statements in the target as `role` (SET ROLE in a DBA's session)."""
    conn = admin_connection(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


@pytest.fixture
def statements_on(target_source: DataSource) -> Iterator[DataSource]:
    """pg_stat_statements in the target database, counters reset, readable by the portal's role."""
    portal = sql.Identifier(tls_target.PORTAL_ROLE)
    db = target_source.database
    dba(
        db,
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
        sql.SQL("GRANT pg_read_all_stats TO {}").format(portal),
        "SELECT pg_stat_statements_reset()",
    )
    yield target_source
    dba(db, sql.SQL("REVOKE pg_read_all_stats FROM {}").format(portal), "DROP EXTENSION IF EXISTS pg_stat_statements")


def active_grant(user: Any, owner: Any, source: DataSource, schema: str, name: str) -> Grant:
    grant = approved(user, owner, Dataset.objects.get(source=source, schema=schema, name=name), source)
    run_counted(apply_job(grant))
    grant.refresh_from_db()
    assert grant.status == GrantStatus.ACTIVE
    return grant


def member_login(dbname: str, of: str, name: str) -> str:
    """A login role that is a member of `of` (as a JIT login is of the person's role), whose
    search_path names the finance schema first."""
    login = f"{ROLE_PREFIX}{name}"
    dba(
        dbname,
        sql.SQL("CREATE ROLE {} LOGIN INHERIT").format(sql.Identifier(login)),
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(of), sql.Identifier(login)),
        sql.SQL("ALTER ROLE {} SET search_path = finance, public").format(sql.Identifier(login)),
    )
    return login


def test_a_grant_used_through_set_role_shows_its_last_use_and_an_unused_one_is_flagged(
    statements_on: DataSource, analyst: Any, owner: Any
) -> None:
    source = statements_on
    db = source.database
    ledger = active_grant(analyst, owner, source, "finance", "ledger")
    hostile = active_grant(analyst, owner, source, "finance", HOSTILE)
    unused = active_grant(analyst, owner, source, "Sales EU", "customers")
    login = member_login(db, grant_principal(ledger).db_role, "usage_login")

    # Used before the portal's first reading: a count with no time, so the baseline only.
    run_as(db, login, "SET search_path = finance, public", "SELECT count(*) FROM ledger")
    first = usage_snapshot_take(source=source)
    assert first.can_tell and first.grants_used == 0
    facts = last_use_for_grants([ledger.pk, hostile.pk, unused.pk])
    assert {f.state for f in facts.values()} == {UseState.NOT_SEEN}
    assert facts[ledger.pk].text == f"No use seen since {timezone.localtime():%Y-%m-%d}"
    assert not any(f.flagged for f in facts.values())

    # Used now: an unqualified name resolved along the login's search_path, the same statement
    # again (its count grows), and the hostile table by its qualified name inside a CTE.
    run_as(
        db,
        login,
        "SET search_path = finance, public",
        "SELECT count(*) FROM ledger",
        'WITH lines AS (SELECT * FROM finance."Order ""Lines""; DROP TABLE x; --" WHERE amount > 1)'
        " SELECT count(*) FROM lines",
    )
    second = usage_snapshot_take(source=source)
    assert second.grants_used == 2
    state = SourceUsage.objects.get(source=source)
    facts = last_use_for_grants([ledger.pk, hostile.pk, unused.pk])
    assert facts[ledger.pk].state == UseState.USED and facts[ledger.pk].last_used_at == state.last_read_at
    assert facts[ledger.pk].used_as == login
    assert facts[ledger.pk].text.startswith("Last used ")
    assert facts[hostile.pk].state == UseState.USED
    assert facts[unused.pk].state == UseState.NOT_SEEN
    event = AuditEvent.objects.filter(action="usage.snapshot").order_by("-pk").first()
    assert event is not None and event.metadata["grants_used"] == 2

    # A reading that sees nothing new records nothing.
    events = AuditEvent.objects.filter(action="usage.snapshot").count()
    assert usage_snapshot_take(source=source).grants_used == 0
    assert AuditEvent.objects.filter(action="usage.snapshot").count() == events

    # 120 days later (the times moved back): the grant nobody used is flagged, revoke suggested;
    # the one used recently is not, the hostile one, last used 100 days ago, is.
    past = timezone.now() - dt.timedelta(days=120)
    Grant.objects.filter(pk__in=[ledger.pk, hostile.pk, unused.pk]).update(starts_at=past)
    SourceUsage.objects.filter(source=source).update(observed_since=past)
    GrantUsage.objects.filter(grant=hostile).update(last_used_at=timezone.now() - dt.timedelta(days=100))
    facts = last_use_for_grants([ledger.pk, hostile.pk, unused.pk])
    assert facts[unused.pk].flagged and facts[unused.pk].suggestion.startswith("Unused for 90 days")
    assert facts[unused.pk].text == f"No use seen since {timezone.localtime(past):%Y-%m-%d}"
    assert facts[hostile.pk].flagged
    assert not facts[ledger.pk].flagged


def test_statements_of_a_package_role_the_portal_or_a_superuser_are_nobodys_use(
    statements_on: DataSource, analyst: Any, owner: Any
) -> None:
    source = statements_on
    db = source.database
    grant = active_grant(analyst, owner, source, "finance", "ledger")
    usage_snapshot_take(source=source)
    package = next(
        r for (r,) in _rows(db, "SELECT rolname FROM pg_roles WHERE rolname LIKE %s", [ROLE_PREFIX + "p\\_ledger%"])
    )
    run_as(db, package, "SELECT count(*) FROM finance.ledger")  # which member? it cannot say
    dba(db, "SELECT count(*) FROM finance.ledger")  # the DBA, a member of every role
    assert usage_snapshot_take(source=source).grants_used == 0
    assert last_use_for_grants([grant.pk])[grant.pk].state == UseState.NOT_SEEN


def test_a_reset_of_the_counters_moves_where_observation_begins(
    statements_on: DataSource, analyst: Any, owner: Any
) -> None:
    source = statements_on
    db = source.database
    grant = active_grant(analyst, owner, source, "finance", "ledger")
    role = grant_principal(grant).db_role
    run_as(db, role, "SELECT count(*) FROM finance.ledger")
    usage_snapshot_take(source=source)
    before = SourceUsage.objects.get(source=source)
    dba(db, "SELECT pg_stat_statements_reset()")
    run_as(db, role, "SELECT count(*) FROM finance.ledger")  # fewer calls than before: still a use
    assert usage_snapshot_take(source=source).grants_used == 1
    after = SourceUsage.objects.get(source=source)
    assert after.stats_reset is not None and after.stats_reset != before.stats_reset
    assert before.observed_since is not None and after.observed_since == after.stats_reset > before.observed_since


def test_a_source_without_pg_stat_statements_says_so(target_source: DataSource, analyst: Any, owner: Any) -> None:
    grant = active_grant(analyst, owner, target_source, "finance", "ledger")
    assert last_use_for_grants([grant.pk])[grant.pk].text == "Cannot tell: the source's use has not been read yet."
    result = usage_snapshot_take(source=target_source)
    assert not result.can_tell
    fact = last_use_for_grants([grant.pk])[grant.pk]
    assert fact.state == UseState.CANNOT_TELL and not fact.flagged
    assert fact.text == (
        f"Cannot tell: the pg_stat_statements extension is not installed in database {target_source.database}."
    )
    assert AuditEvent.objects.filter(action="usage.snapshot", reason=fact.reason).count() == 1


def test_a_portal_role_without_pg_read_all_stats_cannot_tell(
    statements_on: DataSource, analyst: Any, owner: Any
) -> None:
    source = statements_on
    grant = active_grant(analyst, owner, source, "finance", "ledger")
    usage_snapshot_take(source=source)
    dba(source.database, sql.SQL("REVOKE pg_read_all_stats FROM {}").format(sql.Identifier(tls_target.PORTAL_ROLE)))
    usage_snapshot_take(source=source)
    fact = last_use_for_grants([grant.pk])[grant.pk]
    assert fact.state == UseState.CANNOT_TELL
    assert "cannot see other users' statements: it needs pg_read_all_stats" in fact.text
    state = SourceUsage.objects.get(source=source)
    assert state.counters == {} and state.observed_since is None


def test_the_scheduled_run_reads_every_source_and_one_that_does_not_answer_keeps_its_state(
    statements_on: DataSource, owner: Any
) -> None:
    down = register_target(f"down_{RUN}", statements_on.database, owner=owner)
    DataSource.objects.filter(pk=down.pk).update(port=free_port())  # nothing listens there
    results = usage_snapshot_all()
    assert results[statements_on.name] == {"can_tell": True, "reason": "", "grants_used": 0}
    assert isinstance(results[down.name], str) and results[down.name]
    assert SourceUsage.objects.filter(source=down).count() == 0  # not "cannot tell": not read at all
    assert SourceUsage.objects.get(source=statements_on).can_tell


def test_the_command_reads_a_source_now_and_says_what_it_can_tell(target_source: DataSource, owner: Any) -> None:
    out = io.StringIO()
    call_command("usage_snapshot", target_source.name, stdout=out)
    assert out.getvalue() == (
        f"{target_source.name}: cannot tell: the pg_stat_statements extension is not installed in database"
        f" {target_source.database}.\n"
    )
    with pytest.raises(CommandError, match="No data source named 'nowhere'"):
        call_command("usage_snapshot", "nowhere")
    down = register_target(f"down_{RUN}", target_source.database, owner=owner)
    DataSource.objects.filter(pk=down.pk).update(port=free_port())
    with pytest.raises(CommandError, match=f"^{down.name}: ") as failed:
        call_command("usage_snapshot", down.name)
    assert "\n" not in str(failed.value)


def _rows(dbname: str, query: str, params: list[Any]) -> list[tuple[Any, ...]]:
    conn = admin_connection(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return list(cur.fetchall())
    finally:
        conn.close()
