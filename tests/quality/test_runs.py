"""Quality checks measured on a real source (the TLS target cluster, as the least-privileged portal
role): each kind's answer, the pass/fail turn when the data changes, read-only runs, the time limit,
and no value of a PII column kept anywhere."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from governance.errors import InvalidInput, NotPermitted
from notifications.models import Notification
from quality.models import CheckStatus, ColumnProfile, DatasetQuality, QualityCheck, QualityResult, QualityRun
from quality.services.checks import quality_check_create, quality_check_review, quality_check_update
from quality.services.runs import quality_run, quality_runs_due
from tests.provisioning.conftest import admin_connection, dba

from .conftest import CANARY

pytestmark = pytest.mark.django_db(transaction=True)


def check(
    dataset: Any, actor: Any, name: str, kind: str, column: str = "", threshold: float = 0.0, **params: Any
) -> QualityCheck:
    return quality_check_create(
        actor=actor, dataset=dataset, name=name, kind=kind, column=column, params=params, threshold=threshold
    )


def result(run: QualityRun, name: str) -> QualityResult:
    return run.results.get(check_ref__name=name)


def test_a_failing_completeness_check_turns_green_once_the_data_is_fixed(customers: Any, owner: Any) -> None:
    check(customers, owner, "email present", "completeness", "email")
    run = quality_run(dataset=customers, actor=owner)
    got = result(run, "email present")
    assert (got.status, got.failing, got.examined, got.value) == (CheckStatus.FAIL, 10, 100, 0.1)
    assert DatasetQuality.objects.get(dataset=customers).status == "failing"
    event = AuditEvent.objects.get(action="quality.run", metadata__run=run.pk)
    assert event.actor_id == owner.pk and event.metadata["failing"] == ["email present"]
    # The owner hears once that it turned red (the run's actor here is the owner: so it is the system's
    # scheduled run that tells them; a run by the owner records it for the digest and history).
    assert Notification.objects.filter(kind="quality_failing", context__dataset=customers.pk).count() == 1

    dba(
        customers.source.database,
        "UPDATE shop.customers SET email = 'filled' || id || '@example.com' WHERE email IS NULL",
    )
    again = quality_run(dataset=customers)
    assert result(again, "email present").status == CheckStatus.PASS
    assert DatasetQuality.objects.get(dataset=customers).status == "passing"
    assert QualityCheck.objects.get(name="email present").last_status == CheckStatus.PASS


def test_each_kind_measures_what_it_says(customers: Any, owner: Any, gov_admin: Any) -> None:
    from governance.models import Dataset

    orders = Dataset.objects.get(source=customers.source, schema="shop", name="orders")
    check(customers, owner, "country known", "allowed_values", "country", values=["UK", "FR"])
    check(customers, owner, "score in range", "range", "score", min=0, max=89)
    check(customers, owner, "email shape", "pattern", "email", pattern=r"^person[0-9]+@example\.com$")
    check(customers, owner, "country unique", "uniqueness", "country", threshold=1.0)
    check(customers, owner, "fresh", "freshness", "seen_at", threshold=60.0)
    check(customers, owner, "enough rows", "row_count", threshold=50)
    quality_check_create(
        actor=owner, dataset=orders, name="customer exists", kind="referential", column="customer_id",
        params={"schema": "shop", "table": "customers", "column": "id"},
    )  # fmt: skip
    custom = check(customers, owner, "no score 42", "custom_sql", sql="SELECT * FROM shop.customers WHERE score = 42")
    run = quality_run(dataset=customers)
    assert result(run, "country known").failing == 33  # DE: ids where i % 3 == 2 -> 33 of 100
    assert result(run, "score in range").failing == 10  # scores 90..99
    assert result(run, "email shape").failing == 0 and result(run, "email shape").examined == 90
    assert result(run, "country unique").failing == 97  # 3 values, 100 rows
    assert result(run, "country unique").status == CheckStatus.PASS  # threshold 1.0: duplicates allowed
    fresh = result(run, "fresh")
    assert fresh.status == CheckStatus.FAIL and 3500 < (fresh.value or 0) < 3700  # an hour old, at most a minute wanted
    assert result(run, "enough rows").value == 100 and result(run, "enough rows").status == CheckStatus.PASS
    # Owner-written SQL waits for a review by someone else before it runs.
    assert not run.results.filter(check_ref=custom).exists()
    with pytest.raises(NotPermitted):
        quality_check_review(actor=owner, check=custom)
    quality_check_review(actor=gov_admin, check=custom)
    run = quality_run(dataset=customers)
    assert result(run, "no score 42").failing == 1 and result(run, "no score 42").status == CheckStatus.FAIL
    # Changing its text withdraws the review.
    quality_check_update(actor=owner, check=custom, params={"sql": "SELECT * FROM shop.customers WHERE score = 43"})
    assert QualityCheck.objects.get(pk=custom.pk).reviewed_at is None
    ref = result(quality_run(dataset=orders), "customer exists")
    assert (ref.failing, ref.examined, ref.status) == (2, 52, CheckStatus.FAIL)


def test_one_broken_check_does_not_hide_the_others(customers: Any, owner: Any) -> None:
    check(customers, owner, "email present", "completeness", "email")
    broken = check(customers, owner, "score range", "range", "score", min=0, max=10)
    # A bound that no longer fits the column (as if the type changed under the check).
    QualityCheck.objects.filter(pk=broken.pk).update(params={"min": "not a number", "max": None})
    run = quality_run(dataset=customers)
    assert result(run, "email present").status == CheckStatus.FAIL and result(run, "email present").failing == 10
    bad = result(run, "score range")
    assert bad.status == CheckStatus.ERROR and "invalid input syntax" in bad.message
    assert run.status == "failing"


def test_runs_never_write_to_the_source(customers: Any, owner: Any, gov_admin: Any) -> None:
    writing = "WITH gone AS (DELETE FROM shop.customers RETURNING *) SELECT * FROM gone"
    with pytest.raises(InvalidInput) as refused:
        check(customers, owner, "sneaky", "custom_sql", sql=writing)
    assert refused.value.field == "params.sql"
    with pytest.raises(InvalidInput):
        check(customers, owner, "locking", "custom_sql", sql="SELECT * FROM shop.customers FOR UPDATE")
    # A SELECT that writes through a function passes the parser, and a reviewer may miss it: the
    # run's read-only transaction refuses it...
    sneaky = check(
        customers, owner, "sneaky", "custom_sql", sql="SELECT * FROM shop.customers WHERE nextval('shop.ids') > 0"
    )
    quality_check_review(actor=gov_admin, check=sneaky)
    # ...and what PostgreSQL lets through a read-only transaction (lo_create, on 15) is rolled back:
    # a run never commits.
    lo = check(customers, owner, "lo", "custom_sql", sql="SELECT * FROM shop.customers WHERE lo_create(0) > 0")
    quality_check_review(actor=gov_admin, check=lo)
    # And the writable CTE stored behind the service's back (a hand edit of the portal's table).
    cte = check(customers, owner, "cte", "custom_sql", sql="SELECT * FROM shop.customers")
    quality_check_review(actor=gov_admin, check=cte)
    QualityCheck.objects.filter(pk=cte.pk).update(params={"sql": writing})
    run = quality_run(dataset=customers)
    got = result(run, "sneaky")
    assert got.status == CheckStatus.ERROR and "read-only transaction" in got.message
    assert result(run, "cte").status == CheckStatus.ERROR
    conn = admin_connection(customers.source.database)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM shop.customers")
        assert cur.fetchone()[0] == 100
        cur.execute("SELECT count(*) FROM pg_largeobject_metadata")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT last_value, is_called FROM shop.ids")
        assert cur.fetchone() == (1, False)
    conn.close()


def test_a_run_stops_at_its_time_limit(customers: Any, owner: Any, gov_admin: Any, settings: Any) -> None:
    settings.QUALITY_RUN_TIME_LIMIT_SECONDS = 1
    slow = check(
        customers, owner, "slow", "custom_sql", sql="SELECT * FROM shop.customers WHERE pg_sleep(0.1) IS NOT NULL"
    )
    quality_check_review(actor=gov_admin, check=slow)
    check(customers, owner, "updated", "freshness", "seen_at", threshold=7200.0)  # by name: after "slow"
    run = quality_run(dataset=customers)
    assert "time limit" in result(run, "slow").message and result(run, "slow").status == CheckStatus.ERROR
    later = result(run, "updated")
    assert later.status == CheckStatus.ERROR and "time limit" in later.message  # never a pass it did not measure
    conn = admin_connection(customers.source.database)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(0.1)%' AND pid <> pg_backend_pid()"
        )
        assert cur.fetchone()[0] == 0  # nothing left running on the source
    conn.close()


def test_no_pii_value_is_stored_or_shown(customers: Any, owner: Any, client: Any) -> None:
    dba(customers.source.database, f"UPDATE shop.customers SET email = '{CANARY}' WHERE id = 11")
    check(customers, owner, "email shape", "pattern", "email", pattern=r"^person[0-9]+@example\.com$")
    check(customers, owner, "email known", "allowed_values", "email", values=["person12@example.com"])
    run = quality_run(dataset=customers)
    assert result(run, "email shape").failing == 1  # the canary fails the pattern...
    email = ColumnProfile.objects.get(run=run, column="email")
    assert email.values_withheld and email.minimum is None and email.top_values == []  # ...and is nowhere
    country = ColumnProfile.objects.get(run=run, column="country")
    assert not country.values_withheld and {v for v, _ in country.top_values} == {"UK", "FR", "DE"}
    from django.db import connection

    with connection.cursor() as cur:
        for table in ("quality_qualityresult", "quality_columnprofile", "quality_qualityrun", "quality_qualitycheck",
                      "audit_auditevent", "notifications_notification"):  # fmt: skip
            cur.execute(f"SELECT count(*) FROM {table} t WHERE t::text LIKE %s", [f"%{CANARY}%"])
            assert cur.fetchone()[0] == 0, table


def test_large_tables_are_sampled_for_fractions_but_not_for_uniqueness(
    customers: Any, owner: Any, settings: Any
) -> None:
    settings.QUALITY_SAMPLE_ABOVE_ROWS = 10
    settings.QUALITY_SAMPLE_PERCENT = 50.0
    check(customers, owner, "email present", "completeness", "email", threshold=1.0)
    check(customers, owner, "id unique", "uniqueness", "id")
    run = quality_run(dataset=customers)
    assert run.sample_percent == 50.0 and run.estimated_rows == 100
    assert (result(run, "email present").examined or 0) <= 100
    assert result(run, "id unique").examined == 100  # the whole table


def test_bad_definitions_are_refused_naming_the_field(customers: Any, owner: Any, analyst: Any) -> None:
    with pytest.raises(NotPermitted):
        check(customers, analyst, "x", "completeness", "email")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"kind": "nope", "column": "email"}, "kind"),
        ({"kind": "completeness", "column": "missing"}, "column"),
        ({"kind": "completeness", "column": "email", "threshold": 2}, "threshold"),
        ({"kind": "pattern", "column": "email", "params": {"pattern": "("}}, "params.pattern"),
        ({"kind": "range", "column": "score", "params": {}}, "params.min"),
        (
            {"kind": "referential", "column": "id", "params": {"schema": "shop", "table": "nope", "column": "id"}},
            "params.column",
        ),
        ({"kind": "custom_sql", "params": {"sql": "DROP TABLE shop.customers"}}, "params.sql"),
        ({"kind": "custom_sql", "params": {"sql": "SELECT 1; SELECT 2"}}, "params.sql"),
    ]
    for fields, field in cases:
        with pytest.raises(InvalidInput) as refused:
            quality_check_create(actor=owner, dataset=customers, name="bad", **fields)
        assert refused.value.field == field, fields
    assert not QualityCheck.objects.exists()
    assert AuditEvent.objects.filter(action="quality_check.create", outcome="denied").count() == len(cases) + 1


def test_scheduled_runs_are_handed_out_once(customers: Any, owner: Any) -> None:
    check(customers, owner, "email present", "completeness", "email")
    assert quality_runs_due() == [customers.pk]  # a new check makes its dataset due at once
    assert quality_runs_due() == []  # moved past this beat
    from quality.tasks import run_quality_checks

    assert run_quality_checks(customers.pk) == "failing"
    state = DatasetQuality.objects.get(dataset=customers)
    assert state.next_run_at is not None and state.running_since is None
