"""The approval-to-verified latency histogram on /metrics (docs/operations.md#metrics): an approval
whose job the engine runs to a verified grant counts once; running it again (a re-apply of an active
grant) does not count it twice. The engine runs in this process, as Prometheus would see a worker's."""

from __future__ import annotations

from typing import Any

import pytest

from governance.models import Dataset, DataSource, Grant, GrantStatus, JobAction, ProvisioningJob
from governance.services.engine.run import provisioning_jobs_run
from tests.observability.metrics import TOKEN, scrape, value
from tests.provisioning.test_engine_run import approved

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
