"""S3 integrity against moto's server: the bucket's protections as read with the source's keys, and a
deleted object found in the manifest diff of an immutable prefix."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from audit.models import AuditEvent
from governance.services.catalog import dataset_register_s3, datasource_create
from quality.models import IntegrityFinding, IntegritySnapshot
from quality.services.integrity import integrity_watch_set
from quality.services.runs import quality_run
from tests.aws import ACCOUNT, REGION, MotoServer, moto_server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


def prefix(moto: MotoServer, gov_admin: Any, owner: Any, classifications: Any, bucket: str) -> Any:
    source = datasource_create(
        actor=gov_admin, name=f"lake_{secrets.token_hex(3)}", kind="aws", aws_account_id=ACCOUNT, aws_region=REGION,
        aws_endpoint_url=moto.url, username="testing", password="testing", owner=owner, provisioning_enabled=False,
    )  # fmt: skip
    return dataset_register_s3(
        source=source, actor=gov_admin, bucket=bucket, prefix="exports", classification=classifications["internal"]
    )


def test_a_deleted_object_is_found_in_the_manifest_diff_of_an_immutable_prefix(
    moto: MotoServer, gov_admin: Any, owner: Any, classifications: Any
) -> None:
    s3 = moto.client("s3")
    bucket = f"locked-{secrets.token_hex(3)}"
    s3.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}, ObjectLockEnabledForBucket=True
    )
    s3.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
        },
    )
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "alias/lake"}}
            ]
        },
    )
    for name in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=f"exports/{name}.csv", Body=f"rows of {name}".encode())
    s3.put_object(Bucket=bucket, Key="elsewhere/d.csv", Body=b"not under the prefix")
    dataset = prefix(moto, gov_admin, owner, classifications, bucket)
    integrity_watch_set(actor=gov_admin, dataset=dataset, mode="immutable")
    first = quality_run(dataset=dataset)
    snapshot = IntegritySnapshot.objects.get(run=first)
    assert snapshot.rows == 3 and sorted(snapshot.manifest or {}) == [f"exports/{n}.csv" for n in "abc"]
    protections = snapshot.protections or {}
    assert protections["versioning"] == "Enabled" and protections["object_lock"] is True
    assert (protections["lock_mode"], protections["lock_days"]) == ("COMPLIANCE", 1)
    assert (protections["encryption"], protections["kms_key"]) == ("aws:kms", "alias/lake")
    assert protections["problems"] == []

    s3.delete_object(Bucket=bucket, Key="exports/b.csv")  # a delete marker: the object is gone from the listing
    s3.put_object(Bucket=bucket, Key="exports/c.csv", Body=b"rewritten")
    quality_run(dataset=dataset)
    finding = IntegrityFinding.objects.get(dataset=dataset)
    assert "1 object deleted (exports/b.csv)" in finding.detail and "1 object changed (exports/c.csv)" in finding.detail
    event = AuditEvent.objects.get(action="integrity.changed", target_id=str(dataset.pk))
    assert event.metadata["deleted"] == 1 and event.metadata["changed"] == 1
    # Only the latest snapshot keeps its manifest.
    assert IntegritySnapshot.objects.filter(dataset=dataset, manifest__isnull=False).count() == 1


def test_missing_protections_are_reported_and_an_append_only_prefix_may_grow(
    moto: MotoServer, gov_admin: Any, owner: Any, classifications: Any
) -> None:
    s3 = moto.client("s3")
    bucket = f"plain-{secrets.token_hex(3)}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=bucket, Key="exports/a.csv", Body=b"rows")
    dataset = prefix(moto, gov_admin, owner, classifications, bucket)
    integrity_watch_set(actor=gov_admin, dataset=dataset, mode="append_only")
    run = quality_run(dataset=dataset)
    problems = " ".join(IntegritySnapshot.objects.get(run=run).protections["problems"])  # type: ignore[index]
    assert "versioning is disabled" in problems and "Object Lock is off" in problems and "encryption is off" in problems
    s3.put_object(Bucket=bucket, Key="exports/b.csv", Body=b"more rows")
    quality_run(dataset=dataset)
    assert not IntegrityFinding.objects.filter(dataset=dataset).exists()  # added: fine when append-only
    s3.delete_object(Bucket=bucket, Key="exports/a.csv")
    quality_run(dataset=dataset)
    assert "1 object deleted (exports/a.csv)" in IntegrityFinding.objects.get(dataset=dataset).detail
