"""S3 datasets end to end: request, approval with the policy shown, the real Celery worker applying
the IAM policy on moto's server, and the grantee's own S3 calls allowed and denied accordingly.

moto is arranged with auth off (bucket, objects, the portal's IAM user with its documented actions,
the analyst's user and keys), then enforces IAM on every request (tests/aws.py): the worker calls IAM
with the portal's keys, the analyst calls S3 with theirs.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from botocore.exceptions import ClientError
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from governance.models import (
    Dataset,
    DataSource,
    DriftFinding,
    Grant,
    GrantStatus,
    JobStatus,
    ProvisioningJob,
    SourceHealth,
    SourcePrincipal,
)
from governance.provisioners import aws_iam as aws
from governance.provisioners import aws_policy as awsp
from governance.selectors.plans import plan_preview
from governance.services.catalog import dataset_register_s3, datasource_create
from governance.services.grants import grant_revoke
from governance.services.requests import access_request_approve, access_request_submit
from tests.aws import ACCOUNT, REGION, MotoServer, free_port, moto_server, portal_and_grantees
from tests.provisioning.conftest import RUN, settle_jobs, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]
BUCKET = "governed-lake"
DAYS = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        s3 = server.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        for key in ("sales/2026/q1.csv", "hr/salaries.csv"):
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"rows")
        portal_and_grantees(server, account=ACCOUNT, source="lake", grantees=("analyst",))
        yield server


SOURCES = itertools.count(1)


@pytest.fixture
def lake(moto: MotoServer, gov_admin: Any, owner: Any, classifications: Any, analyst: Any) -> Iterator[Dataset]:
    """An AWS source of its own per test (its own IAM path: no test sees another's policies). The
    worker's jobs are let finish before the tables are emptied (see `settle_jobs`)."""
    key_id, secret = moto.keys["portal"]
    source = datasource_create(
        actor=gov_admin,
        name=f"lake_{RUN}_{next(SOURCES)}",
        kind="aws",
        aws_account_id=ACCOUNT,
        aws_region=REGION,
        aws_endpoint_url=moto.url,
        username=key_id,
        password=secret,
        owner=owner,
    )
    call_command(
        "map_principal", source.name, "user/analyst", "--user", analyst.username, "--actor", gov_admin.username
    )
    yield dataset_register_s3(
        source=source, actor=gov_admin, bucket=BUCKET, prefix="sales", classification=classifications["internal"]
    )
    settle_jobs()


def analyst_can(moto: MotoServer, call: str, **kwargs: Any) -> bool:
    s3 = moto.client("s3", moto.keys["analyst"])
    try:
        getattr(s3, call)(Bucket=BUCKET, **kwargs)
        return True
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "AccessDenied", exc.response
        return False


def status(grant: Grant) -> str:
    grant.refresh_from_db()
    return grant.status


def test_an_approved_s3_request_becomes_an_iam_policy_the_grantee_really_uses(
    moto: MotoServer, lake: Dataset, analyst: Any, owner: Any
) -> None:
    req = access_request_submit(requester=analyst, dataset=lake, justification="quarterly figures", duration=2 * DAYS)
    preview = "\n".join(plan_preview(req))  # what the approver sees before approving
    assert f"Add to IAM policy /governance/{lake.source.name}/gov-user-analyst-" in preview
    assert "attached to user/analyst" in preview and "read on s3://governed-lake/sales" in preview
    assert f"arn:aws:s3:::{BUCKET}/sales/*" in preview and '"Effect": "Deny"' in preview
    # ...in the portal's request page, the admin's and the API, as for SQL plans.
    from django.test import Client
    from rest_framework.test import APIClient

    from accounts.tokens import api_token_create

    web = Client()
    web.force_login(analyst)
    page = web.get(f"/portal/requests/{req.pk}/").content.decode()
    assert f"arn:aws:s3:::{BUCKET}/sales/*" in page and "attached to user/analyst" in page
    web.force_login(owner)
    page = web.get(f"/admin/governance/accessrequest/{req.pk}/change/").content.decode()
    assert f"What approval will run on {lake.source.name}</strong>" in page
    assert f"arn:aws:s3:::{BUCKET}/sales/*" in page and "attached to user/analyst" in page
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=owner, scopes='read').secret}")
    plan = api.get(f"/api/v1/access-requests/{req.pk}/").json()["plan"]
    assert any(f"arn:aws:s3:::{BUCKET}/sales/*" in line for line in plan)
    assert not analyst_can(moto, "get_object", Key="sales/2026/q1.csv")

    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)
    wait_for(lambda: status(grant) == GrantStatus.ACTIVE, timeout=30)
    job = ProvisioningJob.objects.get(grant=grant, action="apply")
    assert job.statements[0].startswith("CreatePolicy /governance/") and job.statements[-1].startswith("AttachUser")
    assert analyst_can(moto, "get_object", Key="sales/2026/q1.csv")
    assert not analyst_can(moto, "get_object", Key="hr/salaries.csv")
    assert not analyst_can(moto, "put_object", Key="sales/new.csv", Body=b"x")

    grant_revoke(grant=grant, actor=owner, reason="figures done")
    wait_for(
        lambda: ProvisioningJob.objects.filter(grant=grant, action="revoke", status=JobStatus.SUCCEEDED).exists(),
        timeout=30,
    )
    assert not analyst_can(moto, "get_object", Key="sales/2026/q1.csv")
    revoke = ProvisioningJob.objects.get(grant=grant, action="revoke")
    assert revoke.statements[0].startswith("DetachUserPolicy") and revoke.statements[-1].startswith("DeletePolicy")


def test_an_unmapped_grantee_cannot_even_ask(lake: Dataset, make_user: Any, owner: Any) -> None:
    """Without an IAM identity an approval could never be applied: refused at submission, saying why."""
    from accounts.roles import REQUESTERS
    from governance.errors import PolicyViolation

    stranger = make_user("newcomer", REQUESTERS)
    with pytest.raises(PolicyViolation, match="has no IAM role or user on"):
        access_request_submit(requester=stranger, dataset=lake, justification="onboarding", duration=2 * DAYS)
    assert not Grant.objects.filter(grantee_user=stranger).exists()


def test_a_source_holding_iam_policies_cannot_be_renamed(
    moto: MotoServer, lake: Dataset, analyst: Any, owner: Any, gov_admin: Any
) -> None:
    """Its policies live under a path named after it: a rename would orphan them."""
    from governance.errors import PolicyViolation
    from governance.services.catalog import datasource_update

    req = access_request_submit(requester=analyst, dataset=lake, justification="q3", duration=2 * DAYS)
    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)
    wait_for(lambda: status(grant) == GrantStatus.ACTIVE, timeout=30)
    with pytest.raises(PolicyViolation, match="still has grants provisioned in IAM"):
        datasource_update(source=lake.source, actor=gov_admin, name="renamed")
    assert DataSource.objects.filter(pk=lake.source_id, name=lake.source.name).exists()
    grant_revoke(grant=grant, actor=owner, reason="done")
    wait_for(lambda: not analyst_can(moto, "get_object", Key="sales/2026/q1.csv"), timeout=30)


def test_an_unreachable_endpoint_makes_the_job_wait_then_it_resumes_on_its_own(
    moto: MotoServer, lake: Dataset, analyst: Any, owner: Any
) -> None:
    """Nothing answers at the source's IAM endpoint: the job waits (the grant does not fail), the
    prober's IAM call notices when the endpoint answers again, and the job resumes by itself."""
    DataSource.objects.filter(pk=lake.source_id).update(aws_endpoint_url=f"http://127.0.0.1:{free_port()}")
    req = access_request_submit(requester=analyst, dataset=lake, justification="q2", duration=2 * DAYS)
    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)
    job = wait_for(lambda: ProvisioningJob.objects.filter(grant=grant, waiting_since__isnull=False).first(), timeout=40)
    assert job.status == JobStatus.QUEUED and "the IAM endpoint could not be reached" in job.last_error
    assert not SourceHealth.objects.get(source_id=lake.source_id).reachable
    wait_for(lambda: SourceHealth.objects.get(source_id=lake.source_id).failed_probes >= 2, timeout=20)
    assert status(grant) == GrantStatus.APPROVED
    assert not analyst_can(moto, "get_object", Key="sales/2026/q1.csv")

    DataSource.objects.filter(pk=lake.source_id).update(aws_endpoint_url=moto.url)  # the endpoint is back
    wait_for(lambda: status(grant) == GrantStatus.ACTIVE, timeout=30)
    assert analyst_can(moto, "get_object", Key="sales/2026/q1.csv")
    assert AuditEvent.objects.get(action="source.recovered").metadata["via"] == "probe"
    grant_revoke(grant=grant, actor=owner, reason="done")
    wait_for(lambda: not analyst_can(moto, "get_object", Key="sales/2026/q1.csv"), timeout=30)


def reconcile_cmd(source: DataSource, *extra: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("reconcile", "--source", source.name, *extra, stdout=out, stderr=StringIO())
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_reconcile_finds_a_hand_edited_policy_and_hand_made_attachments_and_fix_repairs_them(
    moto: MotoServer, lake: Dataset, analyst: Any, owner: Any
) -> None:
    req = access_request_submit(requester=analyst, dataset=lake, justification="audit", duration=2 * DAYS)
    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)
    wait_for(lambda: status(grant) == GrantStatus.ACTIVE, timeout=30)
    source = lake.source
    name = awsp.part_name(aws.IamPrincipal("user", "analyst"), source.name, 1)
    arn = f"arn:aws:iam::{ACCOUNT}:policy/governance/{source.name}/{name}"
    assert reconcile_cmd(source)[0] == 0  # clean to begin with

    # Behind the portal's back: the document widened to writes on the whole bucket, the policy
    # attached to another user, and a policy of its own slipped under the portal's path.
    moto.relax_auth()
    try:
        iam = moto.client("iam")
        wider = aws.policy_document(aws.S3Location(BUCKET), "write")
        iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(wider), SetAsDefault=True)
        iam.create_user(UserName=f"intruder{RUN}")
        iam.attach_user_policy(UserName=f"intruder{RUN}", PolicyArn=arn)
        extra = iam.create_policy(
            PolicyName="gov-extra", Path=f"/governance/{source.name}/", PolicyDocument=json.dumps(wider)
        )["Policy"]["Arn"]
        iam.attach_user_policy(UserName="analyst", PolicyArn=extra)
    finally:
        moto.enforce_auth()
    assert analyst_can(moto, "put_object", Key="hr/new.csv", Body=b"x")  # the drift is real

    code, out = reconcile_cmd(source)
    assert code == 1, out
    assert f"unexpected DOCUMENT of IAM policy {name}" in out
    assert f"unexpected ATTACHMENT of IAM policy {name} to user/intruder{RUN}" in out
    assert "unexpected POLICY gov-extra under the portal's path (attached to user/analyst)" in out
    assert DriftFinding.objects.open().filter(source=source).count() == 3

    code, out = reconcile_cmd(source, "--fix")
    assert code == 0 and "clean" in out, out
    assert not analyst_can(moto, "put_object", Key="hr/new.csv", Body=b"x")
    assert not analyst_can(moto, "put_object", Key="sales/new.csv", Body=b"x")
    assert analyst_can(moto, "get_object", Key="sales/2026/q1.csv")  # the approved access stays
    assert not DriftFinding.objects.open().filter(source=source).exists()
    fixed = AuditEvent.objects.filter(action="drift.fixed", metadata__source=source.name)
    assert fixed.count() == 3 and any("DeletePolicy" in " ".join(e.metadata["sql"]) for e in fixed)
    moto.relax_auth()
    try:
        entities = moto.client("iam").list_entities_for_policy(PolicyArn=arn)
        assert [u["UserName"] for u in entities["PolicyUsers"]] == ["analyst"]
    finally:
        moto.enforce_auth()
    assert reconcile_cmd(source)[0] == 0
    grant_revoke(grant=grant, actor=owner, reason="done")
    wait_for(lambda: not analyst_can(moto, "get_object", Key="sales/2026/q1.csv"), timeout=30)


def test_s3_datasets_are_registered_by_command_and_bad_input_is_refused(lake: Dataset, gov_admin: Any) -> None:
    out = StringIO()
    call_command(
        "register_s3_dataset", lake.source.name, f"s3://{BUCKET}/hr/", "--actor", gov_admin.username, stdout=out
    )
    hr = Dataset.objects.get(source=lake.source, schema=BUCKET, name="hr")
    assert hr.kind == "s3_prefix" and f"as dataset #{hr.pk}" in out.getvalue()
    assert AuditEvent.objects.filter(action="dataset.registered", target_id=str(hr.pk), actor=gov_admin).exists()
    for location, message in [
        (f"s3://{BUCKET}/hr", "already registered"),
        (f"s3://{BUCKET}/hr*", "not a usable prefix"),
        ("s3://Not_A_Bucket/x", "not a valid S3 bucket name"),
        (f"{BUCKET}/x", "is not an s3://bucket/prefix location"),
    ]:
        with pytest.raises(CommandError, match=message):
            call_command("register_s3_dataset", lake.source.name, location, "--actor", gov_admin.username)
    assert Dataset.objects.filter(source=lake.source).count() == 2


def test_mapping_an_identity_is_validated_and_audited(lake: Dataset, gov_admin: Any, make_user: Any) -> None:
    from accounts.roles import REQUESTERS

    mapped = SourcePrincipal.objects.get(source=lake.source, db_role="user/analyst")
    assert not mapped.managed
    assert AuditEvent.objects.filter(action="source_principal.mapped", target_id=str(mapped.pk)).exists()
    bob = make_user("bob", REQUESTERS)
    for name, message in [
        ("group/admins", "role/NAME or user/NAME"),
        ("user/analyst", "already stands for someone else"),
        ("user/bad name", "role/NAME or user/NAME"),
    ]:
        with pytest.raises(CommandError, match=message):
            call_command("map_principal", lake.source.name, name, "--user", bob.username, "--actor", gov_admin.username)
    with pytest.raises(CommandError, match="Only governance admins"):
        call_command("map_principal", lake.source.name, "user/bob", "--user", bob.username, "--actor", bob.username)
    assert not SourcePrincipal.objects.filter(user=bob).exists()


def test_mapping_a_postgresql_login_checks_the_role_name(source: DataSource, gov_admin: Any, analyst: Any) -> None:
    for name in ("pg_monitor", "x" * 64, "public"):
        with pytest.raises(CommandError, match="Not a usable PostgreSQL role name"):
            call_command("map_principal", source.name, name, "--user", analyst.username, "--actor", gov_admin.username)
    call_command("map_principal", source.name, "ana_login", "--user", analyst.username, "--actor", gov_admin.username)
    assert SourcePrincipal.objects.get(source=source, user=analyst).db_role == "ana_login"


def test_a_long_prefix_is_provisioned_and_reconciled(
    moto: MotoServer, lake: Dataset, analyst: Any, owner: Any, gov_admin: Any
) -> None:
    """Prefixes are not PostgreSQL names: longer than 63 bytes is fine everywhere, drift included."""
    prefix = "warehouse/exports/" + "daily-" * 12 + "eu"
    moto.relax_auth()
    try:
        moto.client("s3").put_object(Bucket=BUCKET, Key=f"{prefix}/part-0.csv", Body=b"rows")
    finally:
        moto.enforce_auth()
    deep = dataset_register_s3(source=lake.source, actor=gov_admin, bucket=BUCKET, prefix=prefix)
    req = access_request_submit(requester=analyst, dataset=deep, justification="exports", duration=2 * DAYS)
    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)
    wait_for(lambda: status(grant) == GrantStatus.ACTIVE, timeout=30)
    assert analyst_can(moto, "get_object", Key=f"{prefix}/part-0.csv")
    code, out = reconcile_cmd(lake.source)
    assert code == 0 and "clean" in out, out
    grant_revoke(grant=grant, actor=owner, reason="done")
    wait_for(lambda: not analyst_can(moto, "get_object", Key=f"{prefix}/part-0.csv"), timeout=30)


def test_the_api_registers_s3_prefixes_and_maps_identities(lake: Dataset, gov_admin: Any, make_user: Any) -> None:
    from rest_framework.test import APIClient

    from accounts.roles import REQUESTERS
    from accounts.tokens import api_token_create

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=gov_admin, scopes='read,admin').secret}")
    base = f"/api/v1/sources/{lake.source.name}"
    made = api.post(
        f"{base}/s3-datasets/", {"bucket": BUCKET, "prefix": "finance/", "classification": "internal"}, format="json"
    )
    assert made.status_code == 201, made.content
    assert made.json()["location"] == f"s3://{BUCKET}/finance" and made.json()["classification"] == "internal"
    assert Dataset.objects.filter(pk=made.json()["id"], kind="s3_prefix", schema=BUCKET, name="finance").exists()
    refused = api.post(f"{base}/s3-datasets/", {"bucket": BUCKET, "prefix": "finance*"}, format="json")
    assert refused.status_code == 400 and "not a usable prefix" in refused.json()["error"]["message"]

    carol = make_user("carol", REQUESTERS)
    mapped = api.post(f"{base}/principals/", {"name": "role/finance-readers", "user": carol.username}, format="json")
    assert mapped.status_code == 201, mapped.content
    assert mapped.json() == {"source": lake.source.name, "name": "role/finance-readers", "user": "carol", "role": None}
    again = api.post(f"{base}/principals/", {"name": "role/other", "user": carol.username}, format="json")
    assert again.status_code == 400 and "already mapped" in again.json()["error"]["message"]
    neither = api.post(f"{base}/principals/", {"name": "role/other"}, format="json")
    assert neither.status_code == 400 and "either a user or a portal role" in neither.json()["error"]["message"]
    assert SourcePrincipal.objects.filter(source=lake.source).count() == 2  # analyst's and carol's
