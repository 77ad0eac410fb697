"""Differentially private aggregates end to end on the real TLS target (docs/privacy.md): budget
spending and refusal, the noise against its documented 95% bound, clamping and the contribution
limit computed in SQL, nothing provisioned, and who may query through the API."""

from __future__ import annotations

import math
import threading
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, connections

from audit.models import AuditEvent
from governance.errors import ConflictError
from governance.models import DataSource, Grant, GrantStatus, ProvisioningJob
from privacy import sql
from privacy.models import PrivacyBudget, PrivacyQuery
from privacy.services.policy import Bound, Categories, privacy_policy_save
from privacy.services.queries import privacy_query_run
from tests.api.conftest import error
from tests.privacy.conftest import ROWS, grant_aggregate
from tests.provisioning.conftest import admin_connection

pytestmark = pytest.mark.django_db(transaction=True)


def per_customer(dataset: Any, owner: Any, k: int = 2) -> None:
    """The owner makes the customer the privacy unit, with at most k rows each."""
    privacy_policy_save(
        dataset=dataset,
        actor=owner,
        aggregates_only=True,
        unit_column="customer_id",
        contribution_limit=k,
        bounds=[Bound("amount", Decimal(0), Decimal(100))],
        categoricals=[Categories("region", ["EU", "US"])],
    )


def spec(dataset: Any, kind: str, *, unit: str = "", k: int = 1, **fields: Any) -> sql.AggregateSpec:
    return sql.AggregateSpec(schema=dataset.schema, table=dataset.name, kind=kind, k=k, unit_column=unit, **fields)


def test_a_dp_count_stays_within_its_95_percent_bound_spends_budget_and_is_audited(
    aggregate_grant: Grant, analyst: Any
) -> None:
    runs, epsilon = 220, Decimal("0.04")
    bound = 1 / float(epsilon) * math.log(20)  # sensitivity 1 (each row a unit): scale 25, bound ~74.9
    answers: list[int] = []
    for _ in range(runs):
        query = privacy_query_run(grant_id=aggregate_grant.pk, actor=analyst, kind="count", epsilon=epsilon)
        assert isinstance(query.answer, int)  # a count stays an integer after its (integer) noise
        answers.append(query.answer)
    within = sum(abs(a - ROWS) <= bound for a in answers)
    assert within >= 0.9 * runs, (within, answers[:20])
    assert len(set(answers)) > 10 and any(a != ROWS for a in answers)  # noise exists
    assert PrivacyBudget.objects.get(grant=aggregate_grant).spent == epsilon * runs
    events = AuditEvent.objects.filter(action="privacy.query", outcome="success", target_id=str(aggregate_grant.pk))
    assert events.count() == runs
    assert {e.actor_id for e in events} == {analyst.pk}
    assert {e.metadata["epsilon"] for e in events} == {"0.040000"}
    # The audit trail holds the noisy answers, never the exact count.
    assert sorted(e.metadata["answer"]["value"] for e in events) == sorted(answers)
    last = events.order_by("pk").last()
    assert last is not None and Decimal(last.metadata["remaining"]) == Decimal(10) - epsilon * runs


def test_a_query_over_the_remaining_budget_spends_nothing_and_a_spent_budget_refuses_all(
    purchases: Any, analyst: Any, owner: Any
) -> None:
    grant = grant_aggregate(purchases, analyst, owner, Decimal(1))
    privacy_query_run(grant_id=grant.pk, actor=analyst, kind="count", epsilon="0.6")
    with pytest.raises(ConflictError, match=r"exceeds the remaining budget 0\.4; nothing was spent") as over:
        privacy_query_run(grant_id=grant.pk, actor=analyst, kind="count", epsilon="0.5")
    assert over.value.field == "epsilon"
    assert PrivacyBudget.objects.get(grant=grant).spent == Decimal("0.6")
    privacy_query_run(grant_id=grant.pk, actor=analyst, kind="sum", column="amount", epsilon="0.4")
    with pytest.raises(ConflictError, match=r"budget of grant #\d+ is spent"):
        privacy_query_run(grant_id=grant.pk, actor=analyst, kind="count", epsilon="0.01")
    assert PrivacyQuery.objects.filter(grant=grant).count() == 2
    denied = AuditEvent.objects.filter(action="privacy.query", outcome="denied", actor_id=analyst.pk)
    assert [e.metadata["epsilon"] for e in denied.order_by("pk")] == ["0.5", "0.01"]


def test_sums_clamp_to_the_bounds_and_a_unit_contributes_at_most_k_rows(purchases: Any, owner: Any) -> None:
    source = purchases.source
    bounds: dict[str, Any] = {"column": "amount", "lower": Decimal(0), "upper": Decimal(100)}
    # Each row a unit: every row counts, each amount clamped (1000 rows of 1,000,000 count as 100).
    assert sql.run(source, spec(purchases, "sum", **bounds)) == sql.Exact(count=ROWS, total=Decimal(105000))
    # The customer the unit, k = 2: customer 999's 1000 rows count twice.
    exact = sql.run(source, spec(purchases, "sum", unit="customer_id", k=2, **bounds))
    assert exact == sql.Exact(count=102, total=Decimal(5200))
    hist = sql.run(
        source, spec(purchases, "histogram", unit="customer_id", k=2, column="region", categories=["EU", "US"])
    )
    assert hist.bins == {"EU": 52, "US": 50}
    filtered = sql.run(
        source, spec(purchases, "count", unit="customer_id", k=2, filter_column="region", filter_value="US")
    )
    assert filtered.count == 50


def test_mean_through_the_service_is_the_bounded_mean_when_epsilon_is_huge(
    purchases: Any, analyst: Any, owner: Any, settings: Any
) -> None:
    settings.PRIVACY_MAX_EPSILON = 9999
    per_customer(purchases, owner)
    grant = grant_aggregate(purchases, analyst, owner, Decimal(9000))
    mean = privacy_query_run(grant_id=grant.pk, actor=analyst, kind="mean", column="amount", epsilon=4000)
    assert mean.answer is not None and mean.answer["mean"] == pytest.approx(5200 / 102, abs=0.05)
    hist = privacy_query_run(grant_id=grant.pk, actor=analyst, kind="histogram", column="region", epsilon=4000)
    assert hist.answer == {"EU": 52, "US": 50}


def test_concurrent_queries_cannot_overspend_the_budget(purchases: Any, analyst: Any, owner: Any) -> None:
    grant = grant_aggregate(purchases, analyst, owner, Decimal(1))
    start = threading.Barrier(4)
    outcomes: list[str] = []

    def ask() -> None:
        try:
            start.wait()
            privacy_query_run(grant_id=grant.pk, actor=analyst, kind="count", epsilon="0.3")
            outcomes.append("answered")
        except ConflictError:
            outcomes.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["answered", "answered", "answered", "refused"]
    assert PrivacyBudget.objects.get(grant=grant).spent == Decimal("0.9")


def test_the_engine_provisions_nothing_for_an_aggregate_grant(aggregate_grant: Grant) -> None:
    from governance.provisioning import active_grants_for

    assert aggregate_grant.status == GrantStatus.ACTIVE and aggregate_grant.epsilon == Decimal(10)
    assert not ProvisioningJob.objects.filter(grant=aggregate_grant).exists()
    assert (
        active_grants_for(dataset=aggregate_grant.dataset, grantee_user=aggregate_grant.grantee_user, grantee_role=None)
        == []
    )
    source: DataSource = aggregate_grant.dataset.source
    conn = admin_connection(source.database)
    try:
        with conn.cursor() as cur:
            # Roles are cluster-wide and other tests of this run share the prefix (and the grantee's
            # name): what must hold is that no role of the portal holds anything on this table.
            cur.execute(
                "SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee"
                " WHERE c.oid = %s::regclass AND starts_with(r.rolname, %s)",
                [f"{aggregate_grant.dataset.schema}.{aggregate_grant.dataset.name}", source.role_prefix],
            )
            assert cur.fetchone()[0] == 0  # no portal role holds anything on the table
    finally:
        conn.close()


def test_raw_read_on_an_aggregates_only_dataset_is_refused_naming_the_level(
    purchases: Any, analyst: Any, api: Any
) -> None:
    response = api(analyst).post(
        "/api/v1/access-requests/",
        {"dataset": purchases.pk, "level": "read", "justification": "x", "longest_allowed": True},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert error(response)["field"] == "level"
    assert "aggregates only" in error(response)["message"]


def test_the_approver_sets_the_budget_within_the_maximum_through_the_api(
    purchases: Any, analyst: Any, owner: Any, api: Any
) -> None:
    from governance.services.requests import access_request_submit

    req = access_request_submit(
        requester=analyst, dataset=purchases, level="aggregate", justification="x", longest_allowed=True
    )
    url = f"/api/v1/access-requests/{req.pk}/approve/"
    too_much = api(owner).post(url, {"epsilon": "11"}, format="json")
    assert too_much.status_code == 400 and error(too_much)["field"] == "epsilon"
    assert api(owner).post(url, {"epsilon": "2.5"}, format="json").status_code == 200
    assert Grant.objects.get(source_request=req).epsilon == Decimal("2.5")


def test_only_the_grantee_queries_their_grant_through_the_api(
    aggregate_grant: Grant, analyst: Any, owner: Any, api: Any, django_assert_max_num_queries: Any
) -> None:
    url = f"/api/v1/privacy/grants/{aggregate_grant.pk}/query/"
    body = {"kind": "count", "epsilon": "0.5"}
    assert api(owner).post(url, body, format="json").status_code == 404
    assert api(None).post(url, body, format="json").status_code in (401, 403)
    answered = api(analyst).post(url, body, format="json")
    assert answered.status_code == 201, answered.content
    assert isinstance(answered.json()["answer"], int) and answered.json()["epsilon"] == "0.500000"
    bad = api(analyst).post(url, {"kind": "sum", "column": "region", "epsilon": "0.5"}, format="json")
    assert bad.status_code == 400 and error(bad)["field"] == "column"
    client = api(analyst)
    with django_assert_max_num_queries(8):
        listed = client.get("/api/v1/privacy/grants/")
    assert listed.status_code == 200
    assert listed.json()["results"][0]["epsilon_remaining"] == "9.5"
    assert api(owner).get("/api/v1/privacy/grants/").json()["results"] == []
    assert connection.in_atomic_block is False


def test_the_grantee_asks_through_the_portal_page_and_sees_answer_budget_and_history(
    aggregate_grant: Grant, analyst: Any
) -> None:
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(analyst)
    url = reverse("privacy:grant", args=[aggregate_grant.pk])
    asked = client.post(url, {"kind": "histogram", "column": "region", "epsilon": "2.5"})
    page = asked.content.decode()
    assert asked.status_code == 200, page
    assert 'id="budget-remaining">7.5<' in page and 'id="answer-value">{&#x27;EU&#x27;:' in page
    too_much = client.post(url, {"kind": "count", "epsilon": "8"})
    assert too_much.status_code == 400
    assert "epsilon 8 exceeds the remaining budget 7.5; nothing was spent." in too_much.content.decode()
    history = client.get(url).content.decode()
    assert history.count("<td>Histogram(region)</td>") == 1 and 'id="budget-spent">2.5<' in history


def test_a_source_that_cannot_answer_is_a_503_and_the_epsilon_stays_spent(
    aggregate_grant: Grant, analyst: Any, api: Any
) -> None:
    from governance import crypto

    DataSource.objects.filter(pk=aggregate_grant.dataset.source_id).update(
        password_encrypted=crypto.encrypt("not the password")
    )
    url = f"/api/v1/privacy/grants/{aggregate_grant.pk}/query/"
    response = api(analyst).post(url, {"kind": "count", "epsilon": "0.25"}, format="json")
    assert response.status_code == 503, response.content
    assert "the epsilon stays spent" in error(response)["message"]
    assert PrivacyBudget.objects.get(grant=aggregate_grant).spent == Decimal("0.25")
    assert PrivacyQuery.objects.get(grant=aggregate_grant).status == "failed"
    assert AuditEvent.objects.filter(action="privacy.query", outcome="failed", actor_id=analyst.pk).exists()


def test_an_ended_aggregate_grant_refuses_queries_and_its_revocation_queues_no_job(
    aggregate_grant: Grant, analyst: Any, owner: Any, api: Any
) -> None:
    from governance.services.grants import grant_revoke

    grant_revoke(grant=aggregate_grant, actor=owner, reason="project over")
    assert not ProvisioningJob.objects.filter(grant=aggregate_grant).exists()
    url = f"/api/v1/privacy/grants/{aggregate_grant.pk}/query/"
    response = api(analyst).post(url, {"kind": "count", "epsilon": "0.25"}, format="json")
    assert response.status_code == 409 and "has ended" in error(response)["message"]
    assert not PrivacyBudget.objects.filter(grant=aggregate_grant, spent__gt=0).exists()
