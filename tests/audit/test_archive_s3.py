"""Audit archives in S3 with Object Lock, on moto's server: `audit_archive` without `--to` writes the
archive and its signed checkpoint locked in COMPLIANCE mode and encrypted with a KMS key; `audit_verify`
reads the exact version back and walks its chain; deleting it before its retention is refused.

What moto (5.2.5) enforces, and so what these tests prove: a DeleteObject naming a locked version is
refused (AccessDenied), a plain DeleteObject only adds a delete marker, and a PUT under the same key
makes a new version beside the locked one. Verification reads the version recorded in the signed
checkpoint row, so neither a delete marker nor a new version changes what it reads."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import time_machine
from botocore.exceptions import ClientError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from audit import anchors, chain, witnesses
from audit.chain import archive_store
from audit.models import AuditArchive, AuditEvent
from tests.audit.trail import SuperuserSession, events, verify_cli
from tests.aws import REGION, MotoServer, moto_server

pytestmark = pytest.mark.django_db(transaction=True)

BUCKET = "audit-archives-test"
PLAIN_BUCKET = "audit-archives-unversioned"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        s3 = server.client("s3")
        where = {"LocationConstraint": REGION}
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration=where, ObjectLockEnabledForBucket=True)
        # The bucket's own default, as docs/security.md sets it up: COMPLIANCE, a day here.
        s3.put_object_lock_configuration(
            Bucket=BUCKET,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
            },
        )
        s3.create_bucket(Bucket=PLAIN_BUCKET, CreateBucketConfiguration=where)
        server.keys["kms"] = (server.client("kms").create_key(Description="audit archives")["KeyMetadata"]["Arn"], "")
        yield server


@pytest.fixture
def s3_archives(moto: MotoServer, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    witnesses._s3_client.cache_clear()
    settings.AUDIT_ARCHIVE_S3_BUCKET = BUCKET
    settings.AUDIT_ARCHIVE_S3_PREFIX = f"archives-{uuid.uuid4().hex[:8]}-"
    settings.AUDIT_ARCHIVE_S3_RETENTION_DAYS = 2192
    settings.AUDIT_ARCHIVE_S3_KMS_KEY_ID = moto.keys["kms"][0]
    settings.AUDIT_ARCHIVE_S3_ENDPOINT_URL = moto.url
    settings.AWS_REGION = REGION
    yield moto
    witnesses._s3_client.cache_clear()


def archive_old_events(n: int = 4) -> tuple[list[AuditEvent], str]:
    with time_machine.travel(timezone.now() - dt.timedelta(days=400)):
        old = events(n)
    events(2)
    out = io.StringIO()
    call_command("audit_archive", "--older-than", "365", stdout=out)
    return old, out.getvalue()


def test_an_archive_written_to_s3_is_read_back_by_audit_verify_and_cannot_be_deleted_before_its_retention(
    s3_archives: MotoServer, settings: Any
) -> None:
    old, printed = archive_old_events(4)
    made = AuditArchive.objects.get()
    bucket, key, version = archive_store.parse_s3(made.location)
    assert (bucket, key) == (BUCKET, f"{settings.AUDIT_ARCHIVE_S3_PREFIX}{made.file_name}")
    assert f"archived 4 events up to seal 4 to {made.location}" in printed
    assert not AuditEvent.objects.filter(pk__in=[e.pk for e in old]).exists()

    s3 = s3_archives.client("s3")
    stored = s3.head_object(Bucket=BUCKET, Key=key, VersionId=version)
    assert stored["ObjectLockMode"] == "COMPLIANCE"
    assert stored["ObjectLockRetainUntilDate"] > timezone.now() + dt.timedelta(days=2191)
    assert stored["ServerSideEncryption"] == "aws:kms" and stored["SSEKMSKeyId"] == settings.AUDIT_ARCHIVE_S3_KMS_KEY_ID
    body = s3.get_object(Bucket=BUCKET, Key=key, VersionId=version)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == made.sha256
    lines = [json.loads(x) for x in gzip.decompress(body).splitlines()]
    assert [x["event_id"] for x in lines] == [e.pk for e in old]

    # The signed checkpoint beside it: the row's signature, and the head as a signed anchor document.
    beside = s3.get_object(Bucket=BUCKET, Key=f"{key}.checkpoint.json")
    checkpoint = json.loads(beside["Body"].read())
    assert beside["ObjectLockMode"] == "COMPLIANCE"
    assert (checkpoint["upto_seq"], checkpoint["sha256"], checkpoint["signature"]) == (4, made.sha256, made.signature)
    anchor = anchors.parse(checkpoint["anchor"], where="checkpoint")
    assert anchor is not None and (anchor.seq, anchor.chain_mac) == (4, made.chain_mac)

    code, out, err = verify_cli()
    assert code == 0, err
    assert "3 sealed events checked from the archive checkpoint of seal 4" in out
    assert "1 archive(s) read back: 4 archived events checked up to their signed checkpoints" in out

    # Object Lock in COMPLIANCE mode: the locked version cannot be deleted before its date.
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=BUCKET, Key=key, VersionId=version)
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=BUCKET, Key=f"{key}.checkpoint.json", VersionId=beside["VersionId"])
    # A plain delete only hides it behind a delete marker: the recorded version is still read back.
    marker = s3.delete_object(Bucket=BUCKET, Key=key)
    assert marker["DeleteMarker"] is True
    with pytest.raises(ClientError):
        s3.get_object(Bucket=BUCKET, Key=key)
    code, out, err = verify_cli()
    assert code == 0 and "1 archive(s) read back: 4 archived events" in out, err


def test_a_changed_archive_is_named_by_audit_verify(s3_archives: MotoServer, superuser_sql: SuperuserSession) -> None:
    archive_old_events(3)
    made = AuditArchive.objects.get()
    bucket, key, version = archive_store.parse_s3(made.location)
    s3 = s3_archives.client("s3")
    original = s3.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()
    lines = gzip.decompress(original).splitlines()
    lines[1] = lines[1].replace(b'"reason": "reason 1"', b'"reason": "nothing happened"')
    forged = gzip.compress(b"\n".join(lines) + b"\n")
    # Whoever can write to the bucket can only add a version; the locked one is what is read back.
    newer = s3.put_object(Bucket=bucket, Key=key, Body=forged, ChecksumAlgorithm="SHA256")["VersionId"]
    assert newer != version and s3.get_object(Bucket=bucket, Key=key)["Body"].read() == forged
    code, out, err = verify_cli()
    assert code == 0 and "1 archive(s) read back: 3 archived events" in out, err

    # Whoever also holds the database points the checkpoint at the forged version: named.
    superuser_sql(
        "UPDATE audit_auditarchive SET location = %s WHERE id = %s",
        [made.location.replace(version, newer), made.pk],
    )
    code, _, err = verify_cli()
    assert code == 1, err
    assert f"archive: archive {made.file_name} (s3://{bucket}/{key}?versionId={newer}): its SHA-256 is" in err
    assert f"not the {made.sha256} its signed checkpoint recorded (changed)" in err
    # ...and a version that is not there at all.
    superuser_sql(
        "UPDATE audit_auditarchive SET location = %s WHERE id = %s", [made.location.replace(version, "nope"), made.pk]
    )
    code, _, err = verify_cli()
    assert code == 1 and f"cannot read s3://{bucket}/{key} version nope" in err, err
    assert verify_cli("--no-archives")[0] == 0


def test_a_changed_archive_with_a_changed_digest_is_refused_and_its_events_are_checked_too(
    s3_archives: MotoServer, superuser_sql: SuperuserSession
) -> None:
    """The row's SHA-256 rewritten to match a forged version: its signature (the audit key's) no
    longer matches. Re-signed as well (only possible with the audit key: here it checks the second
    layer), the walk finds the event that no longer matches its MAC."""
    archive_old_events(2)
    made = AuditArchive.objects.get()
    bucket, key, version = archive_store.parse_s3(made.location)
    s3 = s3_archives.client("s3")
    lines = gzip.decompress(s3.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()).splitlines()
    lines[0] = lines[0].replace(b'"reason": "reason 0"', b'"reason": "nothing happened"')
    forged = gzip.compress(b"\n".join(lines) + b"\n")
    sha = hashlib.sha256(forged).hexdigest()
    newer = s3.put_object(Bucket=bucket, Key=key, Body=forged, ChecksumAlgorithm="SHA256")["VersionId"]
    location = made.location.replace(version, newer)
    superuser_sql("UPDATE audit_auditarchive SET location = %s, sha256 = %s WHERE id = %s", [location, sha, made.pk])
    code, _, err = verify_cli()
    assert code == 1, err
    assert "archive: the checkpoint of the archive up to seal 2 is not signed with the audit key" in err
    signature = chain.archive_signature(made.upto_seq, made.chain_mac, sha)
    superuser_sql("UPDATE audit_auditarchive SET signature = %s WHERE id = %s", [signature, made.pk])
    code, _, err = verify_cli()
    assert code == 1, err
    assert f"archive: archive {made.file_name} ({location}): seal 1: event #" in err
    assert "does not match its MAC" in err


def test_archives_in_a_folder_then_in_s3_continue_one_chain(s3_archives: MotoServer, tmp_path: Path) -> None:
    """The first archive in a folder (not read back: the chain goes on from its signed checkpoint),
    the next two in S3: each read back from where the one before ended."""
    now = timezone.now()
    with time_machine.travel(now - dt.timedelta(days=800)):
        events(3)
    call_command("audit_archive", "--older-than", "365", "--to", str(tmp_path), stdout=io.StringIO())
    with time_machine.travel(now + dt.timedelta(days=400)):
        call_command("audit_archive", "--older-than", "365", stdout=io.StringIO())  # audit.archived above
        chain.seal_pending(full=True)  # the second audit.archived, then two more events
        events(2)
    with time_machine.travel(now + dt.timedelta(days=800)):
        call_command("audit_archive", "--older-than", "365", stdout=io.StringIO())
    rows = list(AuditArchive.objects.order_by("upto_seq"))
    assert [r.location == "" for r in rows] == [True, False, False]
    # The first holds the three events; the others what came after (audit.archived, the two events,
    # and an audit.partition_dropped for each month dropped whole).
    assert rows[0].upto_seq == 3 and rows[1].upto_seq < rows[2].upto_seq
    assert rows[1].events + rows[2].events == rows[2].upto_seq - 3 >= 4
    code, out, err = verify_cli()
    assert code == 0, err
    read = rows[1].events + rows[2].events
    assert f"2 archive(s) read back: {read} archived events checked up to their signed checkpoints" in out
    assert f"from the archive checkpoint of seal {rows[2].upto_seq}" in out


def test_an_unversioned_bucket_or_no_destination_archives_nothing(s3_archives: MotoServer, settings: Any) -> None:
    with time_machine.travel(timezone.now() - dt.timedelta(days=400)):
        old = events(2)
    settings.AUDIT_ARCHIVE_S3_RETENTION_DAYS = 0
    settings.AUDIT_ARCHIVE_S3_KMS_KEY_ID = ""
    settings.AUDIT_ARCHIVE_S3_BUCKET = PLAIN_BUCKET
    with pytest.raises(CommandError, match=f"s3://{PLAIN_BUCKET} did not version .* the bucket needs Object Lock"):
        call_command("audit_archive", "--older-than", "365")
    settings.AUDIT_ARCHIVE_S3_BUCKET = ""
    with pytest.raises(CommandError, match="no archive destination: give --to DIR, or set AUDIT_ARCHIVE_S3_BUCKET"):
        call_command("audit_archive", "--older-than", "365")
    assert AuditEvent.objects.filter(pk__in=[e.pk for e in old]).count() == 2 and not AuditArchive.objects.exists()


def test_a_folder_archive_keeps_its_signed_checkpoint_beside_it_and_is_not_read_back(tmp_path: Path) -> None:
    with time_machine.travel(timezone.now() - dt.timedelta(days=400)):
        events(3)
    call_command("audit_archive", "--older-than", "365", "--to", str(tmp_path), stdout=io.StringIO())
    made = AuditArchive.objects.get()
    assert made.location == ""
    doc = json.loads((tmp_path / f"{made.file_name}.checkpoint.json").read_text())
    assert (doc["sha256"], doc["signature"]) == (made.sha256, made.signature)
    assert anchors.parse(doc["anchor"], where="checkpoint") is not None
    code, out, err = verify_cli()
    assert code == 0 and "read back" not in out, err
