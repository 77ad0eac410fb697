"""Last-used facts on an AWS source: IAM's service-last-accessed data, asked of moto's server.

moto does not implement GenerateServiceLastAccessedDetails (it answers HTTP 500), so an AWS source
served by it cannot tell; this pins that the portal says so (and why) rather than guessing, and
that the call really goes out for a mapped grantee's identity."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command

from governance.models import Dataset, Grant, SourceUsage
from governance.selectors.usage import UseState, last_use_for_grants
from governance.services.catalog import dataset_register_s3, datasource_create
from governance.services.requests import access_request_approve, access_request_submit
from governance.services.usage import usage_snapshot_take
from tests.aws import ACCOUNT, REGION, MotoServer, moto_server

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        server.client("iam").create_user(UserName="analyst")
        yield server


def test_an_aws_source_served_by_moto_cannot_tell_and_says_why(
    moto: MotoServer, gov_admin: Any, owner: Any, analyst: Any, classifications: Any
) -> None:
    source = datasource_create(
        actor=gov_admin,
        name="lake_usage",
        kind="aws",
        aws_account_id=ACCOUNT,
        aws_region=REGION,
        aws_endpoint_url=moto.url,
        username="testing",
        password="testing",
        owner=owner,
    )
    source.provisioning_enabled = False  # the grant is recorded, not applied: this is about reading use
    source.save(update_fields=["provisioning_enabled"])
    call_command(
        "map_principal", source.name, "user/analyst", "--user", analyst.username, "--actor", gov_admin.username
    )
    dataset: Dataset = dataset_register_s3(source=source, actor=gov_admin, bucket="lake", prefix="sales")
    req = access_request_submit(requester=analyst, dataset=dataset, justification="q1", duration=dt.timedelta(days=3))
    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)

    result = usage_snapshot_take(source=source)
    assert not result.can_tell
    assert "the IAM endpoint does not provide service-last-accessed data" in result.reason
    assert "GenerateServiceLastAccessedDetails" in result.reason
    fact = last_use_for_grants([grant.pk])[grant.pk]
    assert fact.state == UseState.CANNOT_TELL and not fact.flagged
    assert fact.text.startswith("Cannot tell: the IAM endpoint does not provide service-last-accessed data")
    assert SourceUsage.objects.get(source=source).observed_since is None
