"""The approval-to-verified latency histogram (docs/operations.md#metrics): an approval whose job
the engine runs to a verified grant counts once; running it again (a re-apply of an active grant)
does not count it twice. First with the engine in this process (the web's /metrics, as one host with
a shared multiprocess directory sees it), then in a real Celery worker process, read over HTTP from
the worker's own metrics port, as Prometheus scrapes a worker pod that shares nothing with the web."""

from __future__ import annotations

from typing import Any

import pytest

from governance.models import Dataset, DataSource, Grant, GrantStatus, JobAction, ProvisioningJob
from governance.services.engine.run import provisioning_jobs_run
from governance.services.requests import access_request_approve, access_request_submit
from tests.observability.metrics import TOKEN, fetch, scrape, scrape_url, value
from tests.provisioning.conftest import settle_jobs, wait_for
from tests.provisioning.test_engine_run import DAY, approved

pytestmark = pytest.mark.django_db(transaction=True)
COUNT = "governance_grant_approval_to_verified_seconds_count"
BUCKET = "governance_grant_approval_to_verified_seconds_bucket"


def test_an_approval_verified_on_the_target_counts_in_the_latency_histogram(
    settings: Any, target_source: DataSource, analyst: Any, owner: Any
) -> None:
    settings.METRICS_TOKEN = TOKEN
    ledger = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    before = scrape()

    grant = approved(analyst, owner, ledger, target_source)
    job = ProvisioningJob.objects.create(grant=grant, action=JobAction.APPLY, plan_digest=grant.plan_digest)
    assert provisioning_jobs_run(job_ids=[job.pk]).as_dict()["succeeded"] == 1
    assert Grant.objects.get(pk=grant.pk).status == GrantStatus.ACTIVE

    after = scrape()
    assert value(after, COUNT) - value(before, COUNT) == 1
    # Approved and verified within the day: counted in the 24 h bucket, not below zero.
    assert value(after, BUCKET, le="86400.0") - value(before, BUCKET, le="86400.0") == 1

    again = ProvisioningJob.objects.create(grant=grant, action=JobAction.APPLY, plan_digest=grant.plan_digest)
    assert provisioning_jobs_run(job_ids=[again.pk]).as_dict()["succeeded"] == 1
    assert value(scrape(), COUNT) == value(after, COUNT)  # already active: not approved again


@pytest.mark.worker
def test_a_worker_serves_the_histogram_it_observes_on_its_own_metrics_port(
    celery_worker: Any, target_source: DataSource, analyst: Any, owner: Any
) -> None:
    url = f"http://127.0.0.1:{celery_worker.metrics_port}/metrics"
    # The same bearer token as the web's /metrics; nothing but /metrics is served.
    assert fetch(url, token=None)[0] == 401
    assert fetch(url, token="not-the-token")[0] == 401
    assert fetch(url.replace("/metrics", "/admin/"))[0] == 404
    before = scrape_url(url)

    ledger = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    request = access_request_submit(requester=analyst, dataset=ledger, justification="q", duration=DAY)
    access_request_approve(access_request=request, approver=owner)  # the worker provisions it
    grant = Grant.objects.get(source_request=request)
    wait_for(lambda: Grant.objects.get(pk=grant.pk).status == GrantStatus.ACTIVE, timeout=30)
    settle_jobs()

    def counted() -> Any:
        samples = scrape_url(url)
        return samples if value(samples, COUNT) > value(before, COUNT) else None

    after = wait_for(counted)  # observed just after the worker's commit
    assert value(after, COUNT) - value(before, COUNT) == 1
    assert value(after, BUCKET, le="86400.0") - value(before, BUCKET, le="86400.0") == 1
