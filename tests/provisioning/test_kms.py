"""Envelope encryption of stored secrets under an AWS KMS key (governance/envelope.py), against
moto's KMS server (tests/aws.py) and the real target PostgreSQL (tests/tls_target.py).

moto does not refuse Decrypt or ReEncrypt with a disabled key, or a key pending deletion (checked
with moto 5.2): "KMS cannot be used" is proven here with KMS unreachable; a disabled key is caught
by the start-up check (DescribeKey's KeyState), which moto does report."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.fernet import InvalidToken, MultiFernet
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from audit.models import AuditEvent
from compliance.controls import compliance_posture
from governance import crypto, envelope
from governance.catalog import introspect
from governance.catalog.sync import SyncFailed, read_source
from governance.envelope import aws_kms
from governance.models import DataSource
from governance.services.catalog import datasource_update
from tests import tls_target
from tests.aws import REGION, MotoServer, free_port, moto_server

pytestmark = pytest.mark.django_db(transaction=True)

ALIAS = "alias/portal-secrets"


@pytest.fixture(scope="module")
def kms_server() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture
def kms(kms_server: MotoServer, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh KMS key behind ALIAS, the portal configured to encrypt under the alias."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = kms_server.client("kms")
    key = client.create_key(Description="portal secrets")["KeyMetadata"]
    with contextlib.suppress(client.exceptions.NotFoundException):
        client.delete_alias(AliasName=ALIAS)
    client.create_alias(AliasName=ALIAS, TargetKeyId=key["KeyId"])
    settings.AWS_REGION = REGION
    settings.AWS_KMS_ENDPOINT_URL = kms_server.url
    settings.FIELD_ENCRYPTION_KMS_KEY_ID = ALIAS
    settings.FIELD_ENCRYPTION_DATA_KEY_CACHE_SECONDS = 300
    settings.FIELD_ENCRYPTION_DATA_KEY_CACHE_SIZE = 1000
    aws_kms._client.cache_clear()
    crypto.clear_key_cache()
    client.first_arn, client.first_id = key["Arn"], key["KeyId"]
    yield client
    aws_kms._client.cache_clear()
    crypto.clear_key_cache()


def kms_unreachable(settings: Any, *, forget: bool = True) -> None:
    """KMS is gone (stopped, network cut): nothing listens at the endpoint any more. `forget`: the
    data keys this process holds are dropped too (else they serve until they expire)."""
    settings.AWS_KMS_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    aws_kms._client.cache_clear()
    if forget:
        crypto.clear_key_cache()


def local_keys_only() -> MultiFernet:
    from django.conf import settings

    from governance.crypto import _fernet

    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def connects(source: DataSource) -> str:
    """The source's connection test: log in with its stored password, ask who we are."""
    source = DataSource.objects.get(pk=source.pk)
    with introspect.connect(source) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user")
        return str(cur.fetchone()[0])


def rewrap() -> str:
    out = StringIO()
    call_command("rewrap_secrets", stdout=out)
    return out.getvalue()


def keys_control() -> Any:
    (found,) = [c for c in compliance_posture().controls if c.key == "keys_rotated"]
    return found


def test_with_kms_no_secret_decrypts_without_it_and_a_key_rotation_rewrap_keeps_the_source_working(
    target_source: DataSource, kms: Any, settings: Any
) -> None:
    cluster = tls_target.current()
    # Stored before KMS was configured: a MultiFernet token, still read (existing installs work).
    before = DataSource.objects.get(pk=target_source.pk).password_encrypted
    assert not envelope.is_envelope(before)
    assert connects(target_source) == cluster.portal_role
    found = keys_control()
    assert found.status == "fail" and "target_" in found.reason and "(FIELD_ENCRYPTION_KEYS)" in found.reason, (
        found.reason
    )

    # The re-wrap seals it into an envelope under the alias's key.
    assert "re-wrapped 1 data source password(s)" in rewrap()
    raw = DataSource.objects.get(pk=target_source.pk).password_encrypted
    assert raw.startswith("kms1.") and crypto.key_of(raw) == kms.first_arn
    assert cluster.portal_password not in raw
    # Neither the whole value nor any part of it is a token the local keys open.
    for part in [raw, *raw.split(".")]:
        with pytest.raises(InvalidToken):
            local_keys_only().decrypt(part.encode())
    assert connects(target_source) == cluster.portal_role
    found = keys_control()
    assert found.status == "pass", found.reason
    assert found.reason.startswith(f"All 1 stored secrets are under KMS key {kms.first_arn}")

    # Rotation: a new key, the alias moved to it. Until the re-wrap the envelope names the old key.
    second = kms.create_key(Description="portal secrets, rotated")["KeyMetadata"]
    kms.update_alias(AliasName=ALIAS, TargetKeyId=second["KeyId"])
    assert keys_control().status == "fail"
    assert "re-wrapped 1 data source password(s)" in rewrap()
    raw_after = DataSource.objects.get(pk=target_source.pk).password_encrypted
    assert crypto.key_of(raw_after) == second["Arn"] != kms.first_arn
    assert raw_after.split(".")[3:] == raw.split(".")[3:]  # ReEncrypt: only the data key's wrapping changed
    crypto.clear_key_cache()
    assert connects(target_source) == cluster.portal_role
    # KMS itself holds the envelope to its key: the old key cannot unwrap the new wrapping.
    with pytest.raises(ClientError, match="AccessDeniedException"):
        kms.decrypt(CiphertextBlob=envelope.Envelope.loads(raw_after).wrapped, KeyId=kms.first_arn)

    # Idempotent: a second run changes nothing, and says so.
    assert "re-wrapped 0 data source password(s)" in rewrap() and "1 already current" in rewrap()
    assert DataSource.objects.get(pk=target_source.pk).password_encrypted == raw_after
    events = AuditEvent.objects.filter(action="encryption_keys.rotated").order_by("id")
    assert [e.metadata["key"] for e in events][-4:-2] == [kms.first_arn, second["Arn"]]
    assert keys_control().status == "pass"

    # Without KMS, nothing: the stored password does not decrypt, the sync says why, no traceback.
    kms_unreachable(settings)
    with pytest.raises(envelope.KeyUnavailable, match="AWS KMS could not be reached to unwrap a data key"):
        crypto.decrypt(raw_after)
    with pytest.raises(SyncFailed, match=f"Could not sync {target_source.name}: AWS KMS could not be reached"):
        read_source(DataSource.objects.get(pk=target_source.pk))


def test_the_beat_task_rewraps_after_the_alias_moved_and_records_only_changes(
    target_source: DataSource, kms: Any
) -> None:
    from governance.tasks import rewrap_secrets

    first = rewrap_secrets()
    assert first["changed"] == 1 and first["key"] == kms.first_arn
    assert rewrap_secrets() == {"key": kms.first_arn, "changed": 0, "unchanged": 1}
    assert AuditEvent.objects.filter(action="encryption_keys.rotated").count() == 1
    second = kms.create_key()["KeyMetadata"]
    kms.update_alias(AliasName=ALIAS, TargetKeyId=second["KeyId"])
    assert rewrap_secrets()["changed"] == 1
    assert crypto.key_of(DataSource.objects.get(pk=target_source.pk).password_encrypted) == second["Arn"]
    assert connects(target_source) == tls_target.current().portal_role


def test_without_kms_the_admin_answers_with_a_message_not_a_500(
    target_source: DataSource, kms: Any, settings: Any, client: Any, superuser: Any
) -> None:
    rewrap()
    kms_unreachable(settings)
    client.force_login(superuser)
    # Pages that show sources and the posture render, the posture names the problem.
    for url in ("/admin/governance/datasource/", f"/admin/governance/datasource/{target_source.pk}/change/"):
        assert client.get(url).status_code == 200
    found = keys_control()
    assert found.status == "fail" and "AWS KMS could not be reached to describe the key" in found.reason
    # A new password cannot be sealed: the service refuses with a clear error, nothing is written.
    before = DataSource.objects.get(pk=target_source.pk).password_encrypted
    from governance.errors import Unavailable

    with pytest.raises(Unavailable, match="The password cannot be stored now: AWS KMS could not be reached"):
        datasource_update(source=target_source, actor=superuser, password="another")
    assert DataSource.objects.get(pk=target_source.pk).password_encrypted == before


def test_the_start_up_check_names_an_unreachable_or_disabled_key(kms: Any, settings: Any) -> None:
    call_command("check", "--deploy", "--tag", "kms")  # usable: no error
    kms.disable_key(KeyId=kms.first_id)
    with pytest.raises(SystemCheckError, match=r"governance.E005.*is Disabled"):
        call_command("check", "--deploy", "--tag", "kms")
    kms.enable_key(KeyId=kms.first_id)
    kms_unreachable(settings)
    with pytest.raises(SystemCheckError, match=r"governance.E004.*AWS KMS could not be reached to describe the key"):
        call_command("check", "--deploy", "--tag", "kms")


def test_unwrapped_data_keys_are_held_for_a_bounded_time_and_number(kms: Any, settings: Any) -> None:
    tokens = [crypto.encrypt(f"secret-{n}") for n in range(3)]
    assert len(envelope.data_keys) == 3
    # Held: reads need no KMS.
    kms_unreachable(settings, forget=False)
    assert [crypto.decrypt(t) for t in tokens] == ["secret-0", "secret-1", "secret-2"]

    # At most FIELD_ENCRYPTION_DATA_KEY_CACHE_SIZE: the least recently used goes first.
    settings.AWS_KMS_ENDPOINT_URL = kms.meta.endpoint_url
    aws_kms._client.cache_clear()
    settings.FIELD_ENCRYPTION_DATA_KEY_CACHE_SIZE = 2
    crypto.clear_key_cache()
    sized = [crypto.encrypt(f"sized-{n}") for n in range(3)]
    assert len(envelope.data_keys) == 2
    kms_unreachable(settings, forget=False)
    assert crypto.decrypt(sized[2]) == "sized-2"
    with pytest.raises(envelope.KeyUnavailable):
        crypto.decrypt(sized[0])

    # At most FIELD_ENCRYPTION_DATA_KEY_CACHE_SECONDS: after that, KMS again.
    settings.AWS_KMS_ENDPOINT_URL = kms.meta.endpoint_url
    aws_kms._client.cache_clear()
    settings.FIELD_ENCRYPTION_DATA_KEY_CACHE_SECONDS = 0.3
    crypto.clear_key_cache()
    short = crypto.encrypt("short-lived")
    kms_unreachable(settings, forget=False)
    time.sleep(0.4)
    with pytest.raises(envelope.KeyUnavailable):
        crypto.decrypt(short)
    assert len(envelope.data_keys) == 0  # the expired key is dropped, not kept

    # Off (0 seconds): never held.
    settings.AWS_KMS_ENDPOINT_URL = kms.meta.endpoint_url
    aws_kms._client.cache_clear()
    settings.FIELD_ENCRYPTION_DATA_KEY_CACHE_SECONDS = 0
    assert crypto.decrypt(crypto.encrypt("uncached")) == "uncached"
    assert len(envelope.data_keys) == 0


def test_a_tampered_or_relabelled_envelope_is_refused(kms: Any) -> None:
    token = crypto.encrypt("hunter2")
    sealed = envelope.Envelope.loads(token)
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    tampered = dataclasses.replace(sealed, ciphertext=flipped).dumps()
    with pytest.raises(Exception, match="fails its integrity check"):
        crypto.decrypt(tampered)
    other = kms.create_key()["KeyMetadata"]["Arn"]
    relabelled = dataclasses.replace(sealed, key_id=other).dumps()
    crypto.clear_key_cache()
    with pytest.raises(envelope.KeyUnavailable, match="AccessDeniedException"):
        crypto.decrypt(relabelled)
    with pytest.raises(Exception, match="not a well-formed key envelope"):
        crypto.decrypt("kms1.only.three")


def test_a_portal_whose_iam_may_no_longer_decrypt_reads_no_secret(
    target_source: DataSource, kms: Any, kms_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto evaluates IAM policies on KMS calls (enforce_auth): revoking the portal's kms:Decrypt is
    how a security team cuts a leaked database copy, or the portal itself, off its secrets. (AWS
    answers AccessDeniedException; moto's IAM answers in XML, which botocore reads as code 403.)"""
    iam = kms_server.client("iam")
    user = f"portal-{target_source.pk}"
    iam.create_user(UserName=user)

    def allow(*actions: str) -> None:
        statement = {"Effect": "Allow", "Action": list(actions), "Resource": "*"}
        iam.put_user_policy(
            UserName=user,
            PolicyName="kms",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
        )

    allow("kms:GenerateDataKey", "kms:Decrypt", "kms:DescribeKey", "kms:ReEncryptFrom", "kms:ReEncryptTo")
    keys = iam.create_access_key(UserName=user)["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys["SecretAccessKey"])
    aws_kms._client.cache_clear()
    kms_server.enforce_auth()
    try:
        assert "re-wrapped 1 data source password(s)" in rewrap()
        crypto.clear_key_cache()
        assert connects(target_source) == tls_target.current().portal_role

        kms_server.relax_auth()
        allow("kms:GenerateDataKey", "kms:DescribeKey")  # kms:Decrypt revoked
        kms_server.enforce_auth()
        crypto.clear_key_cache()
        raw = DataSource.objects.get(pk=target_source.pk).password_encrypted
        with pytest.raises(
            envelope.KeyUnavailable, match=r"AWS KMS refused to unwrap a data key .*: (AccessDeniedException|403)\."
        ):
            crypto.decrypt(raw)
        with pytest.raises(SyncFailed, match="AWS KMS refused to unwrap a data key"):
            read_source(DataSource.objects.get(pk=target_source.pk))
    finally:
        kms_server.relax_auth()
