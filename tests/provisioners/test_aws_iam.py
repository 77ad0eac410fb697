"""The AWS adapter against moto's server, with real S3 calls deciding whether access works.

The world is arranged while moto allows everything: a bucket with objects under two prefixes, the
portal's IAM user holding exactly the policy docs/aws.md gives it, and an analyst user with keys.
Then moto starts enforcing IAM for every request: the adapter works with the portal's keys, and the
analyst's own S3 calls succeed or get AccessDenied by the policies the adapter attached.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from governance.provisioners import aws_iam as aws
from governance.provisioners.postgres import PermanentError, TransientError
from tests.aws import ACCOUNT, REGION, MotoServer, free_port, moto_server

BUCKET = "governed-lake"
SOURCE = "lake"


def portal_policy() -> dict[str, Any]:
    """The portal's own IAM policy (docs/aws.md) as moto can enforce it: moto evaluates the actions
    of IAM calls but not their resources or conditions, so those are widened to '*' here. What is
    proven with real calls: the documented action list is all the portal needs (an action missing
    from it would be refused). The resource scoping is checked by parliament (test below)."""
    document = aws.portal_policy_document(account=ACCOUNT, source=SOURCE)
    return {
        "Version": document["Version"],
        "Statement": [{"Effect": s["Effect"], "Action": s["Action"], "Resource": "*"} for s in document["Statement"]],
    }


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        s3, iam = server.client("s3"), server.client("iam")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        for key in ("sales/2026/q1.csv", "sales/readme.txt", "hr/salaries.csv"):
            s3.put_object(Bucket=BUCKET, Key=key, Body=f"contents of {key}".encode())
        iam.create_user(UserName="portal")
        iam.put_user_policy(UserName="portal", PolicyName="portal", PolicyDocument=json.dumps(portal_policy()))
        keys = iam.create_access_key(UserName="portal")["AccessKey"]
        server.keys["portal"] = (keys["AccessKeyId"], keys["SecretAccessKey"])
        iam.create_user(UserName="analyst")
        keys = iam.create_access_key(UserName="analyst")["AccessKey"]
        server.keys["analyst"] = (keys["AccessKeyId"], keys["SecretAccessKey"])
        server.enforce_auth()
        yield server


@pytest.fixture
def target(moto: MotoServer) -> aws.AwsTarget:
    keys = moto.keys["portal"]
    return aws.AwsTarget(
        region=REGION, endpoint_url=moto.url, access_key_id=keys[0], secret_access_key=keys[1], account_id=ACCOUNT
    )


ANALYST = aws.IamPrincipal("user", "analyst")
SALES = aws.S3Location(BUCKET, "sales")


def make_plan(level: str | None, principal: aws.IamPrincipal = ANALYST, dataset_id: int = 7) -> aws.Plan:
    return aws.plan(principal=principal, location=SALES, level=level, source=SOURCE, dataset_id=dataset_id)


def analyst_can(moto: MotoServer, call: str, **kwargs: Any) -> bool:
    s3 = moto.client("s3", moto.keys["analyst"])
    try:
        getattr(s3, call)(Bucket=BUCKET, **kwargs)
        return True
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "AccessDenied", exc.response
        return False


@pytest.fixture(autouse=True)
def no_grant_left(target: aws.AwsTarget) -> Iterator[None]:
    yield
    for level_plan in (make_plan(None),):
        aws.apply(target, level_plan)


def test_every_generated_document_passes_parliament_and_names_only_the_prefix() -> None:
    for level in aws.LEVELS:
        for location in (SALES, aws.S3Location(BUCKET, "sales/2026"), aws.S3Location(BUCKET)):
            document = aws.policy_document(location, level)
            assert aws.lint(document) == [], (level, location)
            resources = {r for s in document["Statement"] for r in s["Resource"]}
            assert "*" not in resources
            actions = {a for s in document["Statement"] for a in s["Action"]}
            assert all("*" not in a for a in actions)
    read = aws.policy_document(SALES, "read")
    deny = [s for s in read["Statement"] if s["Effect"] == "Deny"]
    assert deny and set(deny[0]["Action"]) == {"s3:PutObject", "s3:DeleteObject"}
    assert not [s for s in aws.policy_document(SALES, "write")["Statement"] if s["Effect"] == "Deny"]
    # parliament catches what moto would accept: an unknown action, a resource of '*'.
    bad = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:FlyToMoon"], "Resource": "*"}]}
    assert any("UNKNOWN_ACTION" in f for f in aws.lint(bad))


def test_names_are_deterministic_and_inputs_are_checked() -> None:
    assert make_plan("read").name == make_plan("write").name  # one policy per (principal, dataset)
    assert make_plan("read").name != make_plan("read", dataset_id=8).name
    assert len(aws.policy_name(aws.IamPrincipal("role", "r" * 58), SALES, dataset_id=10**12)) <= 128
    with pytest.raises(PermanentError, match="not a usable prefix"):
        aws.S3Location(BUCKET, "sales/*")
    with pytest.raises(PermanentError, match="not a valid S3 bucket"):
        aws.S3Location("Bad_Bucket")
    with pytest.raises(PermanentError, match="role/NAME or user/NAME"):
        aws.IamPrincipal.parse("group/admins")


def test_read_grant_allows_the_prefix_only_and_denies_writes_with_real_s3_calls(
    moto: MotoServer, target: aws.AwsTarget
) -> None:
    assert not analyst_can(moto, "get_object", Key="sales/2026/q1.csv")  # nothing granted yet
    plan = make_plan("read")
    done = aws.apply(target, plan)
    assert done[0] == f"CreatePolicy /governance/{SOURCE}/{plan.name}" and done[-1].startswith("AttachUserPolicy")
    assert aws.verify(target, plan) == []
    assert aws.apply(target, plan) == []  # idempotent: nothing to do the second time

    assert analyst_can(moto, "get_object", Key="sales/2026/q1.csv")
    assert analyst_can(moto, "get_object", Key="sales/readme.txt")
    assert not analyst_can(moto, "get_object", Key="hr/salaries.csv")  # outside the prefix
    assert not analyst_can(moto, "put_object", Key="sales/new.csv", Body=b"x")  # the explicit Deny
    assert not analyst_can(moto, "delete_object", Key="sales/readme.txt")

    # The explicit Deny is what keeps a read grant read-only when some other policy allows writes.
    moto.relax_auth()
    try:
        broad = {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": [f"arn:aws:s3:::{BUCKET}/*"]}
        document = json.dumps({"Version": "2012-10-17", "Statement": [broad]})
        moto.client("iam").put_user_policy(UserName="analyst", PolicyName="someone-elses", PolicyDocument=document)
    finally:
        moto.enforce_auth()
    try:
        assert analyst_can(moto, "put_object", Key="hr/new.csv", Body=b"x")  # that other policy works...
        assert not analyst_can(moto, "put_object", Key="sales/new.csv", Body=b"x")  # ...but not on the grant
    finally:
        moto.relax_auth()
        moto.client("iam").delete_user_policy(UserName="analyst", PolicyName="someone-elses")
        moto.enforce_auth()

    # Revoke: detached and deleted; the same read is denied again.
    removed = aws.apply(target, make_plan(None))
    assert removed[0].startswith("DetachUserPolicy") and removed[-1].startswith("DeletePolicy")
    assert aws.verify(target, make_plan(None)) == []
    assert not analyst_can(moto, "get_object", Key="sales/2026/q1.csv")
    assert aws.apply(target, make_plan(None)) == []  # revoking twice is fine


def test_a_level_change_is_a_new_default_version_and_five_versions_at_most(
    moto: MotoServer, target: aws.AwsTarget
) -> None:
    aws.apply(target, make_plan("read"))
    assert not analyst_can(moto, "put_object", Key="sales/new.csv", Body=b"x")
    for _ in range(3):  # read -> write -> read -> ... : every change is a version
        aws.apply(target, make_plan("write"))
        aws.apply(target, make_plan("read"))
    aws.apply(target, make_plan("write"))
    assert aws.verify(target, make_plan("write")) == []
    assert analyst_can(moto, "put_object", Key="sales/new.csv", Body=b"x")
    iam = aws.client(target)
    versions = iam.list_policy_versions(PolicyArn=aws.policy_arn(make_plan("write"), ACCOUNT))["Versions"]
    assert len(versions) <= aws.MAX_VERSIONS


def test_verify_reads_back_a_hand_edited_document_and_a_detachment(moto: MotoServer, target: aws.AwsTarget) -> None:
    plan = make_plan("read")
    aws.apply(target, plan)
    arn = aws.policy_arn(plan, ACCOUNT)
    moto.relax_auth()  # an administrator's hands
    try:
        admin = moto.client("iam")
        wider = aws.policy_document(aws.S3Location(BUCKET), "write")
        admin.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(wider), SetAsDefault=True)
        admin.detach_user_policy(UserName="analyst", PolicyArn=arn)
    finally:
        moto.enforce_auth()
    assert aws.verify(target, plan) == [
        f"policy {plan.name}: the default version is not the approved document",
        f"policy {plan.name} is not attached to user/analyst",
    ]
    aws.apply(target, plan)  # converges back
    assert aws.verify(target, plan) == []


def test_the_portals_own_policy_is_scoped_to_its_path_and_passes_parliament() -> None:
    document = aws.portal_policy_document(account=ACCOUNT, source=SOURCE)
    assert aws.lint(document) == []
    manage = next(s for s in document["Statement"] if s["Sid"] == "ManageOwnPolicies")
    assert manage["Resource"] == [f"arn:aws:iam::{ACCOUNT}:policy/governance/{SOURCE}/*"]
    attach = next(s for s in document["Statement"] if s["Sid"] == "AttachOnlyOwnPolicies")
    assert attach["Condition"] == {"ArnLike": {"iam:PolicyARN": manage["Resource"]}}
    actions = {a for s in document["Statement"] for a in s["Action"]}
    assert all(a.startswith("iam:") and "*" not in a for a in actions)


def test_an_unreachable_endpoint_is_transient_and_access_denied_is_permanent(target: aws.AwsTarget) -> None:
    down = aws.AwsTarget(region=REGION, endpoint_url=f"http://127.0.0.1:{free_port()}", account_id=ACCOUNT,
                         access_key_id="x", secret_access_key="y")  # fmt: skip
    with pytest.raises(TransientError, match="could not be reached") as unreachable:
        aws.apply(down, make_plan("read"))
    assert unreachable.value.unreachable  # the engine parks the source's jobs and probes it
    with pytest.raises(TransientError, match="could not be reached"):
        aws.probe(down, SOURCE, timeout=2)
    stranger = aws.AwsTarget(region=REGION, endpoint_url=target.endpoint_url, account_id=ACCOUNT,
                             access_key_id="AKIAUNKNOWN", secret_access_key="nope")  # fmt: skip
    with pytest.raises(PermanentError, match="iam:GetPolicy") as denied:
        aws.apply(stranger, make_plan("read"))
    assert not denied.value.unreachable
    aws.probe(stranger, SOURCE, timeout=2)  # the endpoint answered (no): it is there
    aws.probe(target, SOURCE, timeout=2)


def test_revoke_also_detaches_what_was_attached_by_hand_to_a_group(moto: MotoServer, target: aws.AwsTarget) -> None:
    plan = make_plan("read")
    aws.apply(target, plan)
    moto.relax_auth()
    try:
        admin = moto.client("iam")
        admin.create_group(GroupName="finance")
        admin.attach_group_policy(GroupName="finance", PolicyArn=aws.policy_arn(plan, ACCOUNT))
    finally:
        moto.enforce_auth()
    removed = aws.apply(target, make_plan(None))  # with the portal's keys: its policy allows group detach
    assert f"DetachGroupPolicy {plan.name} from group/finance" in removed and removed[-1].startswith("DeletePolicy")
    assert aws.verify(target, make_plan(None)) == []


def test_a_whole_bucket_grant_lists_without_a_condition_and_long_names_are_refused() -> None:
    whole = aws.policy_document(aws.S3Location(BUCKET), "read")
    listing = next(s for s in whole["Statement"] if s["Sid"] == "ListThePrefix")
    assert "Condition" not in listing and listing["Resource"] == [f"arn:aws:s3:::{BUCKET}"]
    scoped = next(s for s in aws.policy_document(SALES, "read")["Statement"] if s["Sid"] == "ListThePrefix")
    assert scoped["Condition"] == {"StringLike": {"s3:prefix": ["sales/", "sales/*"]}}  # not "salesforce/"
    with pytest.raises(PermanentError, match="longer than the 63 characters"):
        aws.IamPrincipal("role", "r" * 64)
