"""IAM at scale, end to end: one person holds 50 S3 prefixes on one AWS source.

Requests approved through the services, applied by two real Celery workers racing on the same
grantee's policy (the per-grantee lock and the rebuild from the grants in force keep every
statement), verified by reading IAM back and by the grantee's own S3 calls on moto's server with
IAM enforced. Also: a revoke removes only its statements, the last one deletes the policy, the
first generation's per-dataset policies are converged by the engine and by reconcile --fix, and a
plan that changed after approval is still refused.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from django.core.management import call_command

from governance.backends import plan_digest
from governance.models import Dataset, DataSource, Grant, GrantStatus, JobStatus, ProvisioningJob
from governance.provisioners import aws_iam as aws
from governance.provisioners import aws_policy as awsp
from governance.provisioning import aws_target_for
from governance.services.catalog import dataset_register_s3, dataset_update, datasource_create
from governance.services.grants import grant_revoke
from governance.services.requests import access_request_approve, access_request_submit
from tests.aws import ACCOUNT, REGION, MotoServer, free_port, moto_server, portal_and_grantees
from tests.provisioning.conftest import RUN, Worker, settle_jobs, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]
BUCKET = "wide-lake"
PREFIXES = [f"unit-{n:02d}/exports" for n in range(1, 51)]
DAYS = dt.timedelta(days=1)
WIDE = aws.IamPrincipal("user", "wide")


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        s3 = server.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        for prefix in [*PREFIXES, "hr"]:
            s3.put_object(Bucket=BUCKET, Key=f"{prefix}/rows.csv", Body=b"rows")
        portal_and_grantees(server, account=ACCOUNT, source="wide", grantees=("wide",))
        yield server


SOURCES = itertools.count(1)


@pytest.fixture
def source(moto: MotoServer, gov_admin: Any, owner: Any, analyst: Any) -> Iterator[DataSource]:
    """An AWS source of its own per test (its own IAM path), the analyst mapped to user/wide."""
    key_id, secret = moto.keys["portal"]
    source = datasource_create(
        actor=gov_admin,
        name=f"wide_{RUN}_{next(SOURCES)}",
        kind="aws",
        aws_account_id=ACCOUNT,
        aws_region=REGION,
        aws_endpoint_url=moto.url,
        username=key_id,
        password=secret,
        owner=owner,
    )
    call_command("map_principal", source.name, "user/wide", "--user", analyst.username, "--actor", gov_admin.username)
    yield source
    settle_jobs(timeout=60)


def register(source: DataSource, gov_admin: Any, classifications: Any, count: int) -> list[Dataset]:
    return [
        dataset_register_s3(
            source=source, actor=gov_admin, bucket=BUCKET, prefix=prefix, classification=classifications["internal"]
        )
        for prefix in PREFIXES[:count]
    ]


def approve(analyst: Any, owner: Any, dataset: Dataset) -> Grant:
    req = access_request_submit(requester=analyst, dataset=dataset, justification="scale", duration=2 * DAYS)
    access_request_approve(access_request=req, approver=owner)
    return Grant.objects.get(source_request=req)


def can_read(moto: MotoServer, prefix: str) -> bool:
    try:
        moto.client("s3", moto.keys["wide"]).get_object(Bucket=BUCKET, Key=f"{prefix}/rows.csv")
        return True
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "AccessDenied", exc.response
        return False


def held(moto: MotoServer, source: DataSource) -> dict[str, dict[str, Any]]:
    """What IAM holds for the grantee: the default document of every policy attached to it."""
    moto.relax_auth()
    try:
        iam = moto.client("iam")
        out = {}
        for policy in iam.list_attached_user_policies(UserName="wide")["AttachedPolicies"]:
            try:
                meta = iam.get_policy(PolicyArn=policy["PolicyArn"])["Policy"]
                version = iam.get_policy_version(PolicyArn=policy["PolicyArn"], VersionId=meta["DefaultVersionId"])
            except iam.exceptions.NoSuchEntityException:
                continue  # detached and deleted by the worker between the list and the read: not held
            out[policy["PolicyName"]] = version["PolicyVersion"]["Document"]
        return out
    finally:
        moto.enforce_auth()


def all_status(grants: list[Grant], status: str) -> bool:
    return Grant.objects.filter(pk__in=[g.pk for g in grants], status=status).count() == len(grants)


def reconcile(source: DataSource, *extra: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("reconcile", "--source", source.name, *extra, stdout=out, stderr=StringIO())
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_one_person_holds_fifty_prefixes_with_two_workers_racing_on_the_policy(
    moto: MotoServer,
    source: DataSource,
    analyst: Any,
    owner: Any,
    gov_admin: Any,
    classifications: Any,
    tmp_path: Path,
) -> None:
    datasets = register(source, gov_admin, classifications, 50)
    second = Worker(tmp_path)  # two workers take the 50 jobs of one grantee at once
    second.start()
    try:
        grants = [approve(analyst, owner, dataset) for dataset in datasets]
        finished = (JobStatus.SUCCEEDED, JobStatus.FAILED)
        wait_for(
            lambda: ProvisioningJob.objects.filter(grant__in=grants, status__in=finished).count() == 50,
            timeout=240,
            interval=0.2,
        )
    finally:
        second.stop()
    failed = ProvisioningJob.objects.filter(grant__in=grants).exclude(status=JobStatus.SUCCEEDED)
    assert not failed.exists(), [job.last_error for job in failed[:3]]
    assert all_status(grants, GrantStatus.ACTIVE)
    assert all(g.verified_at is not None for g in Grant.objects.filter(pk__in=[g.pk for g in grants]))

    documents = held(moto, source)
    names = [awsp.part_name(WIDE, source.name, n) for n in range(1, len(documents) + 1)]
    assert sorted(documents) == sorted(names) and len(documents) <= 5  # a few parts, not 50 policies
    assert all(awsp.size(doc) <= awsp.MAX_POLICY_CHARS for doc in documents.values())
    in_iam = [pk for doc in documents.values() for pk in sorted(awsp.dataset_ids(doc))]
    assert sorted(in_iam) == sorted(d.pk for d in datasets)  # each dataset once: no statement lost
    assert all(can_read(moto, prefix) for prefix in PREFIXES)  # real S3 calls with the grantee's keys
    assert not can_read(moto, "hr")
    code, out = reconcile(source)
    assert code == 0 and "clean" in out, out

    # A revoke removes only that dataset's statement group.
    grant_revoke(grant=grants[6], actor=owner, reason="done with unit 7")
    wait_for(lambda: not can_read(moto, PREFIXES[6]), timeout=30)
    settle_jobs()
    after = held(moto, source)
    remaining = {pk for doc in after.values() for pk in awsp.dataset_ids(doc)}
    assert remaining == {d.pk for d in datasets} - {datasets[6].pk}
    assert can_read(moto, PREFIXES[5]) and can_read(moto, PREFIXES[7]) and can_read(moto, PREFIXES[49])

    # The last revoke detaches and deletes the policy.
    for grant in grants[:6] + grants[7:]:
        grant_revoke(grant=grant, actor=owner, reason="project over")
    wait_for(
        lambda: (
            ProvisioningJob.objects.filter(grant__in=grants, action="revoke", status=JobStatus.SUCCEEDED).count() == 50
        ),
        timeout=120,
        interval=0.2,
    )
    assert held(moto, source) == {} and not can_read(moto, PREFIXES[0])
    moto.relax_auth()
    try:
        left = moto.client("iam").list_policies(Scope="Local", PathPrefix=f"/governance/{source.name}/")["Policies"]
    finally:
        moto.enforce_auth()
    assert left == []


def test_first_generation_policies_are_converged_by_the_engine_and_by_reconcile(
    moto: MotoServer, source: DataSource, analyst: Any, owner: Any, gov_admin: Any, classifications: Any
) -> None:
    first, second, third = register(source, gov_admin, classifications, 3)
    grant = approve(analyst, owner, first)
    wait_for(lambda: all_status([grant], GrantStatus.ACTIVE), timeout=30)
    target = aws_target_for(source)
    part = awsp.part_name(WIDE, source.name, 1)

    def legacy_layout(dataset: Dataset) -> str:
        """The state a portal of the previous version left: a per-(principal, dataset) policy."""
        old = aws.plan(principal=WIDE, location=aws.S3Location(BUCKET, dataset.name), level="read",
                       source=source.name, dataset_id=dataset.pk)  # fmt: skip
        aws.apply(target, old)
        return old.name

    # Reconcile: the old policy is drift, and --fix attaches the source policy before deleting it.
    awsp.apply(target, awsp.plan(principal=WIDE, source=source.name, accesses=[]))
    old = legacy_layout(first)
    assert sorted(held(moto, source)) == [old] and can_read(moto, PREFIXES[0])
    code, out = reconcile(source)
    assert code == 1, out
    assert f"missing IAM policy {part}: it does not exist" in out
    assert f"unexpected POLICY {old} under the portal's path (attached to user/wide): a first-generation" in out
    code, out = reconcile(source, "--fix")
    assert code == 0 and "clean" in out, out
    assert sorted(held(moto, source)) == [part] and can_read(moto, PREFIXES[0])
    assert reconcile(source)[0] == 0

    # The engine: the next job of the grantee writes the source policy, then removes the old one.
    old = legacy_layout(second)
    assert sorted(held(moto, source)) == sorted([part, old])
    grants = [grant, approve(analyst, owner, third)]
    wait_for(lambda: all_status(grants, GrantStatus.ACTIVE), timeout=30)
    job = ProvisioningJob.objects.get(grant=grants[1], action="apply")
    assert job.statements.index(f"CreatePolicyVersion {part} (default)") < job.statements.index(f"DeletePolicy {old}")
    assert sorted(held(moto, source)) == [part]
    assert can_read(moto, PREFIXES[0]) and can_read(moto, PREFIXES[2]) and not can_read(moto, PREFIXES[1])
    assert reconcile(source)[0] == 0
    for g in grants:
        grant_revoke(grant=g, actor=owner, reason="done")
    wait_for(lambda: held(moto, source) == {}, timeout=30)


def test_the_digest_ignores_the_other_grants_but_a_changed_plan_is_still_refused(
    moto: MotoServer, source: DataSource, analyst: Any, owner: Any, gov_admin: Any, classifications: Any
) -> None:
    first, second = register(source, gov_admin, classifications, 2)
    req = access_request_submit(requester=analyst, dataset=second, justification="later", duration=2 * DAYS)
    before = plan_digest(req)
    grant = approve(analyst, owner, first)
    wait_for(lambda: all_status([grant], GrantStatus.ACTIVE), timeout=30)
    assert plan_digest(req) == before  # the grantee's policy changed; what this approval adds did not

    # The source stops answering, the approval is queued; the dataset is reclassified meanwhile.
    DataSource.objects.filter(pk=source.pk).update(aws_endpoint_url=f"http://127.0.0.1:{free_port()}")
    access_request_approve(access_request=req, approver=owner)
    late = Grant.objects.get(source_request=req)
    wait_for(lambda: ProvisioningJob.objects.filter(grant=late, waiting_since__isnull=False).exists(), timeout=40)
    dataset_update(dataset=second, actor=gov_admin, classification=classifications["confidential"])
    DataSource.objects.filter(pk=source.pk).update(aws_endpoint_url=moto.url)
    job = wait_for(lambda: ProvisioningJob.objects.filter(grant=late, status=JobStatus.FAILED).first(), timeout=40)
    assert "Plan changed since approval" in job.last_error
    assert not can_read(moto, PREFIXES[1]) and can_read(moto, PREFIXES[0])
    grant_revoke(grant=grant, actor=owner, reason="done")
    wait_for(lambda: held(moto, source) == {}, timeout=30)
