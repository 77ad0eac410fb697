"""The principal's source policy (one managed policy, a statement group per dataset) against
moto's server, with the grantee's own S3 calls deciding whether access works.

Arranged while moto allows everything (bucket, objects, the portal's user with its documented
actions, an analyst with keys), then moto enforces IAM on every request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from governance.provisioners import aws_iam as aws
from governance.provisioners import aws_policy as awsp
from governance.provisioners.postgres import PermanentError
from tests.aws import ACCOUNT, REGION, MotoServer, moto_server, portal_and_grantees

BUCKET = "policy-lake"
SOURCE = "wide"
ANALYST = aws.IamPrincipal("user", "analyst")
LONG = "archive/" + "x" * 180  # long prefixes: few statement groups fit in one part
PREFIXES = [f"team-{n:02d}" for n in range(1, 13)] + [f"{LONG}-{n:02d}" for n in range(1, 13)]


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        s3 = server.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        for prefix in [*PREFIXES, "hr"]:
            s3.put_object(Bucket=BUCKET, Key=f"{prefix}/rows.csv", Body=b"rows")
        portal_and_grantees(server, account=ACCOUNT, source=SOURCE, grantees=("analyst",))
        yield server


@pytest.fixture
def target(moto: MotoServer) -> Iterator[aws.AwsTarget]:
    keys = moto.keys["portal"]
    target = aws.AwsTarget(
        region=REGION, endpoint_url=moto.url, access_key_id=keys[0], secret_access_key=keys[1], account_id=ACCOUNT
    )
    yield target
    awsp.apply(target, make_plan([]))  # nothing left for the next test


def access(n: int, level: str = "read") -> awsp.DatasetAccess:
    return awsp.DatasetAccess(dataset_id=n, location=aws.S3Location(BUCKET, PREFIXES[n - 1]), level=level)


def make_plan(accesses: list[awsp.DatasetAccess]) -> awsp.SourcePlan:
    return awsp.plan(principal=ANALYST, source=SOURCE, accesses=accesses)


def can_read(moto: MotoServer, prefix: str) -> bool:
    try:
        moto.client("s3", moto.keys["analyst"]).get_object(Bucket=BUCKET, Key=f"{prefix}/rows.csv")
        return True
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "AccessDenied", exc.response
        return False


def attached(moto: MotoServer) -> list[str]:
    moto.relax_auth()
    try:
        found = moto.client("iam").list_attached_user_policies(UserName="analyst")["AttachedPolicies"]
        return sorted(p["PolicyName"] for p in found)
    finally:
        moto.enforce_auth()


def test_one_policy_holds_a_statement_group_per_dataset_and_a_revoke_removes_only_its_group(
    moto: MotoServer, target: aws.AwsTarget
) -> None:
    plan = make_plan([access(1), access(2, "write"), access(3)])
    assert len(plan.parts) == 1 and plan.parts[0].datasets == {1, 2, 3}
    sids = [s["Sid"] for s in plan.parts[0].document["Statement"]]
    assert sids == ["D1List", "D1Read", "D1NoWrites", "D2List", "D2Read", "D2Write", "D3List", "D3Read", "D3NoWrites"]
    done = awsp.apply(target, plan)
    assert done == [
        f"CreatePolicy /governance/{SOURCE}/{plan.names[0]}",
        f"AttachUserPolicy {plan.names[0]} to user/analyst",
    ]
    assert awsp.verify(target, plan) == [] and awsp.apply(target, plan) == []  # idempotent
    assert attached(moto) == [plan.names[0]]
    assert all(can_read(moto, PREFIXES[n]) for n in range(3)) and not can_read(moto, "hr")

    smaller = make_plan([access(1), access(3)])
    assert awsp.apply(target, smaller) == [f"CreatePolicyVersion {plan.names[0]} (default)"]
    assert awsp.verify(target, smaller) == []
    assert can_read(moto, PREFIXES[0]) and not can_read(moto, PREFIXES[1]) and can_read(moto, PREFIXES[2])

    gone = awsp.apply(target, make_plan([]))  # the last revoke: detached and deleted
    assert gone[0] == f"DetachUserPolicy {plan.names[0]} from user/analyst" and gone[-1].startswith("DeletePolicy")
    assert attached(moto) == [] and not can_read(moto, PREFIXES[0])
    assert awsp.verify(target, make_plan([])) == []


def test_many_long_prefixes_split_into_numbered_parts_within_the_size_limit(
    moto: MotoServer, target: aws.AwsTarget
) -> None:
    everything = [access(n) for n in range(1, len(PREFIXES) + 1)]
    plan = make_plan(everything)
    assert len(plan.parts) >= 2
    assert all(awsp.size(p.document) <= awsp.MAX_POLICY_CHARS for p in plan.parts)
    assert set().union(*(p.datasets for p in plan.parts)) == set(range(1, len(PREFIXES) + 1))
    assert [p.name for p in plan.parts] == [awsp.part_name(ANALYST, SOURCE, n) for n in range(1, len(plan.parts) + 1)]
    assert awsp.plan(principal=ANALYST, source=SOURCE, accesses=list(reversed(everything))) == plan  # deterministic
    awsp.apply(target, plan)
    assert awsp.verify(target, plan) == []
    assert attached(moto) == sorted(plan.names)
    assert all(can_read(moto, prefix) for prefix in PREFIXES) and not can_read(moto, "hr")

    # Fewer datasets: the later parts are deleted once the earlier ones hold what is left.
    fewer = make_plan(everything[:3])
    done = awsp.apply(target, fewer)
    assert len(fewer.parts) == 1 and attached(moto) == fewer.names
    assert done.index(f"CreatePolicyVersion {fewer.names[0]} (default)") < done.index(f"DeletePolicy {plan.names[1]}")
    assert awsp.verify(target, fewer) == []
    assert can_read(moto, PREFIXES[2]) and not can_read(moto, PREFIXES[-1])


def test_a_group_moving_to_another_part_is_written_to_its_new_part_first() -> None:
    """An added dataset pushes the last group of part 1 into part 2: part 2 is written first, so the
    moved dataset is held by some policy at every moment."""
    before = make_plan([access(n) for n in range(13, 24)])
    after = make_plan([access(n) for n in range(12, 24)])
    held = {p.name: p.datasets for p in before.parts}
    moved = {pk for p in before.parts[:1] for pk in p.datasets} - after.parts[0].datasets
    assert moved, "the arrangement must move a group for this test to mean anything"
    order = [p.name for p in awsp._write_order(after, held)]
    assert order.index(after.parts[1].name) < order.index(after.parts[0].name)


def test_first_generation_policies_are_removed_only_after_the_source_policy_is_attached(
    moto: MotoServer, target: aws.AwsTarget
) -> None:
    legacy = [
        aws.plan(principal=ANALYST, location=access(n).location, level="read", source=SOURCE, dataset_id=n)
        for n in (1, 2)
    ]
    for old in legacy:
        aws.apply(target, old)
    assert can_read(moto, PREFIXES[0]) and can_read(moto, PREFIXES[1])
    plan = make_plan([access(1), access(2)])
    assert awsp.verify(target, plan) == [
        f"policy {plan.names[0]} does not exist",
        *(f"policy {old.name} is still attached to user/analyst" for old in sorted(legacy, key=lambda p: p.name)),
    ]
    done = awsp.apply(target, plan)
    attach = done.index(f"AttachUserPolicy {plan.names[0]} to user/analyst")
    assert all(attach < done.index(f"DeletePolicy {old.name}") for old in legacy)
    assert attached(moto) == plan.names and awsp.verify(target, plan) == []
    assert can_read(moto, PREFIXES[0]) and can_read(moto, PREFIXES[1])


def test_names_are_deterministic_and_a_dataset_twice_is_refused() -> None:
    long = aws.IamPrincipal("role", "r" * 58)
    assert len(awsp.part_name(long, "s" * 100, 999)) <= 128
    assert awsp.base_name(ANALYST, SOURCE) == awsp.base_name(ANALYST, SOURCE) != awsp.base_name(ANALYST, "other")
    assert awsp.is_legacy_name(ANALYST, aws.policy_name(ANALYST, access(1).location, dataset_id=1))
    assert not awsp.is_legacy_name(
        aws.IamPrincipal("user", "bob"), aws.policy_name(ANALYST, access(1).location, dataset_id=1)
    )
    with pytest.raises(PermanentError, match="One statement group per dataset"):
        make_plan([access(1), access(1, "write")])


def test_the_approvers_lines_name_the_policy_and_only_this_datasets_statements() -> None:
    lines = awsp.own_lines(principal=ANALYST, source=SOURCE, access=access(2, "write"))
    text = "\n".join(lines)
    assert lines[0].startswith(f"Add to IAM policy /governance/{SOURCE}/{awsp.base_name(ANALYST, SOURCE)} ")
    assert "attached to user/analyst" in lines[0] and "write on s3://policy-lake/team-02" in lines[0]
    assert '"Sid": "D2Write"' in text and "team-01" not in text
    statements: list[Any] = json.loads("\n".join(lines[1:]))
    assert [s["Sid"] for s in statements] == ["D2List", "D2Read", "D2Write"]
