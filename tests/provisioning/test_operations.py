"""Long operations in the background: the admin's Sync and Reconcile, and the API's sync and
reconcile, start an operation and answer at once; a real worker runs it with its progress recorded;
a caller polls it; the sweeper fails one whose worker died (docs/operations.md)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.tokens import api_token_create
from audit.models import AuditEvent
from governance import progress
from governance.catalog.introspect import SAMPLING
from governance.errors import NotPermitted
from governance.models import Dataset, DataSource, Operation, OperationKind, OperationState
from governance.services.operations import operation_start, operations_sweep
from governance.services.sync import datasource_sync
from tests.provisioning.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SYNC = OperationKind.CATALOG_SYNC


def api_for(user: Any) -> APIClient:
    client = APIClient()
    token = api_token_create(user=user, scopes="read,admin", name="operations test").secret
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.mark.usefixtures("celery_worker")
def test_admin_sync_returns_at_once_and_the_worker_completes_it_with_counts(
    fresh_target: DataSource, superuser: Any, source_row_held: Any
) -> None:
    held = source_row_held(fresh_target)
    client = Client()
    client.force_login(superuser)
    response = client.post(
        reverse("admin:governance_datasource_changelist"),
        {"action": "sync_catalog", "_selected_action": [fresh_target.pk]},
    )
    operation = Operation.objects.get(source=fresh_target)
    # Answered before the sync wrote anything: the worker waits on the held row meanwhile.
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:governance_operation_change", args=[operation.pk])
    assert not Dataset.objects.filter(source=fresh_target).exists()
    assert operation.state in (OperationState.QUEUED, OperationState.RUNNING)
    page = client.get(response["Location"]).content.decode()
    progress_url = reverse("admin:governance_operation_progress", args=[operation.pk])
    assert f'hx-get="{progress_url}"' in page and 'hx-trigger="every 1s"' in page  # polling while unfinished
    assert "htmx" in page  # the script that polls is on the page

    running = wait_for(lambda: Operation.objects.filter(pk=operation.pk, stage="writing the catalog").first())
    assert running.state == OperationState.RUNNING
    held.rollback()  # let the sync write

    done = wait_for(lambda: Operation.objects.filter(pk=operation.pk, finished_at__isnull=False).first(), 60)
    assert done.state == OperationState.SUCCEEDED, done.error
    assert done.result["datasets_created"] == Dataset.objects.filter(source=fresh_target).count() >= 3
    assert "datasets created" in done.summary
    fragment = client.get(progress_url).content.decode()
    assert "hx-get" not in fragment  # finished: the polling stops
    assert "Succeeded" in fragment and done.summary in fragment
    started = AuditEvent.objects.get(action="operation.started")
    assert started.actor == superuser and started.metadata["kind"] == SYNC
    assert AuditEvent.objects.get(action="operation.succeeded").actor == superuser
    assert AuditEvent.objects.get(action="datasource.synced").actor == superuser  # the sync itself, as its starter


@pytest.mark.usefixtures("celery_worker")
def test_api_sync_answers_202_with_a_location_that_is_polled_to_success(
    fresh_target: DataSource, gov_admin: Any
) -> None:
    client = api_for(gov_admin)
    response = client.post(f"/api/v1/sources/{fresh_target.name}/sync/", {}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert response["Location"] == f"/api/v1/operations/{body['id']}/" == body["url"]
    assert body["kind"] == "catalog_sync" and body["source"] == fresh_target.name
    assert body["state"] == "queued" and body["started_by"] == gov_admin.username

    def finished() -> Any:
        polled = client.get(response["Location"]).json()
        return polled if polled["state"] in ("succeeded", "failed") else None

    polled = wait_for(finished, 60)
    assert polled["state"] == "succeeded", polled["error"]
    assert polled["percent"] == 100 and polled["finished_at"]
    assert polled["result"]["datasets_created"] == Dataset.objects.filter(source=fresh_target).count() >= 3


@pytest.mark.usefixtures("celery_worker")
def test_api_reconcile_answers_202_and_the_operation_reports_the_drift(
    target_source: DataSource, gov_admin: Any
) -> None:
    client = api_for(gov_admin)
    response = client.post(f"/api/v1/sources/{target_source.name}/reconcile/", {"fix": False}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["params"] == {"fix": False}

    def finished() -> Any:
        polled = client.get(response["Location"]).json()
        return polled if polled["state"] in ("succeeded", "failed") else None

    polled = wait_for(finished, 60)
    assert polled["state"] == "succeeded", polled["error"]
    assert polled["result"] == {"drift": 0, "fixed": 0, "remaining": 0}
    assert "clean" in polled["summary"]


def test_bad_input_is_a_400_naming_the_field_and_starts_nothing(source: DataSource, gov_admin: Any) -> None:
    client = api_for(gov_admin)
    response = client.post(f"/api/v1/sources/{source.name}/reconcile/", {"fix": "yes"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "fix"
    response = client.post(f"/api/v1/sources/{source.name}/sync/", [], format="json")
    assert response.status_code == 400
    assert client.get("/api/v1/operations/999999/").status_code == 404
    assert not Operation.objects.exists()


def test_a_start_the_actor_may_not_make_is_refused_and_audited(source: DataSource, analyst: Any) -> None:
    with pytest.raises(NotPermitted):
        operation_start(kind=SYNC, source=source, actor=analyst)
    assert not Operation.objects.exists()
    denied = AuditEvent.objects.get(action="operation.start")
    assert denied.outcome == "denied" and denied.actor == analyst


def test_catalog_sync_reports_its_progress_relation_by_relation(fresh_target: DataSource) -> None:
    seen: list[tuple[int, int, str]] = []
    with progress.reporting(lambda done, total, stage: seen.append((done, total, stage))):
        datasource_sync(source=fresh_target)
    sampling = [(done, total) for done, total, stage in seen if stage == SAMPLING]
    total = sampling[0][1]
    assert total >= 1  # the tables with columns PII discovery samples, each a step
    assert sampling == [(i, total) for i in range(total + 1)]
    stages = [stage for _, _, stage in seen]
    assert stages[0] == "reading the source" and stages[-1] == "writing the catalog"


def test_the_sweeper_fails_an_operation_whose_worker_stopped(source: DataSource, superuser: Any) -> None:
    fresh_target = source
    lease = dt.timedelta(seconds=settings.OPERATION_LEASE_SECONDS)
    now = timezone.now()
    dead = Operation.objects.create(kind=SYNC, source=fresh_target, started_by=superuser, state="running")
    alive = Operation.objects.create(kind=SYNC, source=fresh_target, started_by=superuser, state="running")
    lost = Operation.objects.create(kind=SYNC, source=fresh_target, started_by=superuser)
    waiting = Operation.objects.create(kind=SYNC, source=fresh_target, started_by=superuser)
    Operation.objects.filter(pk=dead.pk).update(heartbeat_at=now - 2 * lease)
    Operation.objects.filter(pk=alive.pk).update(heartbeat_at=now)
    queued_max = dt.timedelta(seconds=settings.OPERATION_QUEUED_MAX_SECONDS)
    Operation.objects.filter(pk=lost.pk).update(created_at=now - queued_max - dt.timedelta(minutes=1))

    assert operations_sweep() == 2
    dead.refresh_from_db()
    assert dead.state == OperationState.FAILED and "worker running it stopped" in dead.error
    lost.refresh_from_db()
    assert lost.state == OperationState.FAILED and "No worker took it" in lost.error
    assert Operation.objects.get(pk=alive.pk).state == OperationState.RUNNING
    assert Operation.objects.get(pk=waiting.pk).state == OperationState.QUEUED
    failed = AuditEvent.objects.filter(action="operation.failed").order_by("id")
    assert [event.actor for event in failed] == [None, None]  # the system swept them
    assert operations_sweep() == 0


def test_the_operations_changelist_costs_the_same_queries_with_many_rows(source: DataSource, superuser: Any) -> None:
    fresh_target = source
    from tests.admin.test_query_counts import count_queries

    client = Client()
    client.force_login(superuser)
    url = reverse("admin:governance_operation_changelist")
    Operation.objects.bulk_create([Operation(kind=SYNC, source=fresh_target, started_by=superuser) for _ in range(3)])
    small = count_queries(client, url)
    Operation.objects.bulk_create([Operation(kind=SYNC, source=fresh_target, started_by=superuser) for _ in range(30)])
    assert count_queries(client, url) == small <= 6
