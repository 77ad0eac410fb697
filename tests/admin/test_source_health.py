"""Data source health where operators look: its own read-only admin page, the Data sources list,
the Provisioning jobs list (waiting, stalled) and the portal dashboard."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from governance.models import Dataset, DataSource, Grant, JobAction, ProvisioningJob, SourceHealth

pytestmark = pytest.mark.django_db


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def outage(name: str, analyst: User, make_dataset: Callable[..., Dataset], waiting: int = 2) -> DataSource:
    """A source down since ten minutes ago, with `waiting` jobs parked on it."""
    source = DataSource.objects.create(name=name, host="db.example", database="x", username="x")
    ds = make_dataset(f"{name}_table")
    Dataset.objects.filter(pk=ds.pk).update(source=source)
    since = timezone.now() - dt.timedelta(minutes=10)
    SourceHealth.objects.create(
        source=source, reachable=False, since=since, last_error=f"cannot connect to {name}", failed_probes=7
    )
    now = timezone.now()
    for _ in range(waiting):
        grant = Grant.objects.create(
            grantee_user=analyst, dataset=ds, level="read", starts_at=now, ends_at=now + dt.timedelta(days=1)
        )
        ProvisioningJob.objects.create(grant=grant, action=JobAction.APPLY, waiting_since=since)
    return source


def test_operators_see_source_health_read_only_and_requesters_do_not(
    analyst: User, officer: User, auditor: User, gov_admin: User, make_dataset: Callable[..., Dataset]
) -> None:
    outage("warehouse_b", analyst, make_dataset, waiting=3)
    SourceHealth.objects.create(source=DataSource.objects.get(name="warehouse"), reachable=True)
    url = reverse("admin:governance_sourcehealth_changelist")
    for user in (officer, auditor, gov_admin):
        page = signed_in(user).get(url)
        assert page.status_code == 200, user.username
        body = page.content.decode()
        assert "UNREACHABLE" in body and "cannot connect to warehouse_b" in body
        assert 'class="field-waiting_jobs">3<' in body
        assert "Add data source health" not in body
    only_down = signed_in(officer).get(url + "?reachable__exact=0").content.decode()
    assert "warehouse_b" in only_down and 'field-state">reachable' not in only_down
    assert signed_in(analyst).get(url).status_code == 403
    source = DataSource.objects.get(name="warehouse_b")
    change = signed_in(gov_admin).get(reverse("admin:governance_sourcehealth_change", args=[source.pk]))
    assert change.status_code == 200 and b'name="_save"' not in change.content  # read-only


def test_source_health_changelist_query_count_does_not_grow(
    analyst: User, superuser: User, make_dataset: Callable[..., Dataset]
) -> None:
    client = signed_in(superuser)
    url = reverse("admin:governance_sourcehealth_changelist")

    def count() -> int:
        client.get(url)
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url).status_code == 200
        return len(ctx)

    outage("one", analyst, make_dataset)
    small = count()
    for i in range(5):
        outage(f"more{i}", analyst, make_dataset, waiting=i)
    assert count() == small


def test_data_sources_and_jobs_lists_show_who_waits(
    analyst: User, superuser: User, make_dataset: Callable[..., Dataset], settings: Any
) -> None:
    source = outage("warehouse_b", analyst, make_dataset)
    client = signed_in(superuser)
    sources = client.get(reverse("admin:governance_datasource_changelist")).content.decode()
    assert "UNREACHABLE since" in sources and "cannot connect to warehouse_b" in sources
    down = client.get(reverse("admin:governance_datasource_changelist") + "?health=unreachable").content.decode()
    assert "warehouse_b" in down and ">warehouse<" not in down
    up = client.get(reverse("admin:governance_datasource_changelist") + "?health=reachable").content.decode()
    assert ">warehouse<" in up and "warehouse_b" not in up

    jobs_url = reverse("admin:governance_provisioningjob_changelist")
    waiting = client.get(jobs_url + "?stuck=waiting").content.decode()
    assert waiting.count("waiting for its source since") == 2
    # A job still failing after the attempts limit is listed as stalled; it is not failed.
    job = ProvisioningJob.objects.filter(grant__dataset__source=source).first()
    assert job is not None
    ProvisioningJob.objects.filter(pk=job.pk).update(
        waiting_since=None, attempts=settings.PROVISIONING_MAX_ATTEMPTS, last_error="lock timeout: busy"
    )
    stalled = client.get(jobs_url + "?stuck=stalled").content.decode()
    assert "lock timeout: busy" in stalled and stalled.count("waiting for its source since") == 0


def test_the_dashboard_shows_operators_the_sources_that_do_not_answer(
    analyst: User, officer: User, make_dataset: Callable[..., Dataset]
) -> None:
    calm = signed_in(officer).get("/portal/dashboard/").content.decode()
    assert "Every data source answers." in calm
    outage("warehouse_b", analyst, make_dataset, waiting=4)
    body = signed_in(officer).get("/portal/dashboard/").content.decode()
    panel = body[body.index('id="source-health"') :]
    panel = panel[: panel.index("</section>")]
    assert "warehouse_b" in panel and "<td>4</td>" in panel and "cannot connect to warehouse_b" in panel
    assert "<strong>1</strong><span>data sources not answering</span>" in body
    mine = signed_in(analyst).get("/portal/dashboard/").content.decode()
    assert 'id="source-health"' not in mine and "not answering" not in mine


def test_the_operators_dashboard_costs_the_same_queries_with_more_unreachable_sources(
    analyst: User, officer: User, make_dataset: Callable[..., Dataset]
) -> None:
    client = signed_in(officer)

    def count() -> int:
        client.get("/portal/dashboard/")
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/portal/dashboard/").status_code == 200
        return len(ctx)

    outage("one", analyst, make_dataset)
    small = count()
    for i in range(4):
        outage(f"more{i}", analyst, make_dataset, waiting=i + 1)
    assert count() == small
