"""/metrics (docs/operations.md#metrics): refused without the token, the product's gauges read from
the database in a fixed number of queries, and the API's answers counted by status."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from governance.models import AccessRequest, DriftFinding, Grant, JobAction, JobStatus, ProvisioningJob
from observability.collector import QUERIES
from tests.observability.metrics import TOKEN, scrape, value

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
DAY = dt.timedelta(days=1)


@pytest.fixture
def token(settings: Any) -> str:
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def test_refused_without_a_token_configured_unless_debug(settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    settings.DEBUG = False
    response = Client().get("/metrics", HTTP_HOST="10.0.0.9")
    assert response.status_code == 403 and b"METRICS_TOKEN" in response.content


def test_a_wrong_or_missing_token_is_401(token: str) -> None:
    assert Client().get("/metrics", HTTP_HOST="10.0.0.9").status_code == 401
    wrong = Client().get("/metrics", HTTP_HOST="10.0.0.9", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401 and wrong["WWW-Authenticate"].startswith("Bearer")


def world(source: Any, make_dataset: Any, analyst: Any, owner: Any, n: int) -> None:
    """n of each: pending requests (one a week old), failed and retrying jobs, open drift."""
    now = timezone.now()
    for i in range(n):
        ds = make_dataset(f"t{i}", owner=owner)
        req = AccessRequest.objects.create(
            requester=analyst, grantee_user=analyst, dataset=ds, justification="x", duration=DAY
        )
        if i == 0:
            AccessRequest.objects.filter(pk=req.pk).update(submitted_at=now - dt.timedelta(days=8))
        grant = Grant.objects.create(
            grantee_user=analyst, dataset=ds, level="read", starts_at=now - dt.timedelta(days=1), ends_at=now
        )
        ProvisioningJob.objects.create(grant=grant, action=JobAction.APPLY, status=JobStatus.FAILED, last_error="x")
        ProvisioningJob.objects.create(grant=grant, action=JobAction.APPLY, status=JobStatus.QUEUED, attempts=2)
        revoke = ProvisioningJob.objects.create(grant=grant, action=JobAction.REVOKE, status=JobStatus.QUEUED)
        ProvisioningJob.objects.filter(pk=revoke.pk).update(queued_at=now - dt.timedelta(hours=2))
        DriftFinding.objects.create(
            source=source, principal=f"gov_u_{i}", object_schema="finance", object_name="ledger",
            privilege="UPDATE", kind="unexpected", detail="unexpected UPDATE", found_at=now,
            run_id="00000000-0000-0000-0000-000000000001",
        )  # fmt: skip


@pytest.mark.parametrize("n", [1, 6])
def test_the_product_gauges_in_a_fixed_number_of_queries(
    token: str, source: Any, make_dataset: Any, analyst: Any, owner: Any, n: int, django_assert_num_queries: Any
) -> None:
    world(source, make_dataset, analyst, owner, n)
    client = Client()
    with django_assert_num_queries(QUERIES):
        samples = scrape(client)
    assert value(samples, "governance_provisioning_jobs", status="failed") == n
    assert value(samples, "governance_provisioning_jobs", status="queued") == 2 * n
    assert value(samples, "governance_provisioning_jobs_retrying") == n
    assert value(samples, "governance_revocations_overdue") == n
    assert value(samples, "governance_drift_open", source=source.name) == n
    assert value(samples, "governance_access_requests_pending", age="under_1h") == n - 1
    assert value(samples, "governance_access_requests_pending", age="over_7d") == 1
    assert value(samples, "governance_access_requests_pending_oldest_seconds") >= 8 * 86400
    assert ("governance_audit_events_unsealed", ()) in samples
    assert value(samples, "governance_audit_partitions_missing") == 0  # the migration made them ahead


def test_api_answers_are_counted_by_status(token: str) -> None:
    before = scrape()
    for _ in range(3):
        assert Client().get("/api/v1/access-requests/").status_code == 401
    after = scrape()
    name = "governance_api_requests_total"
    assert value(after, name, method="GET", status="401") - value(before, name, method="GET", status="401") == 3


def test_every_metric_of_the_example_dashboard_is_served(token: str, source: Any) -> None:
    Client().get("/api/v1/access-requests/")  # the API counter has a sample once something was answered
    served = {name for name, _ in scrape()}
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"governance_[a-z0-9_]+", target["expr"])
    }
    assert used and used <= served, used - served
