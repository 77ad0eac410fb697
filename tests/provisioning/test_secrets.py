"""Secrets: key rotation leaves every source connectable, and a canary password appears nowhere it
should not — no log line, API response, admin page, audit row, error message or job record."""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, override_settings
from psycopg2 import sql
from rest_framework.test import APIClient

from accounts.tokens import api_token_create
from audit.models import AuditEvent
from governance import crypto
from governance.models import CredentialRotation, DataSource, ProvisioningJob, RotationStatus, RotationTrigger
from governance.services.catalog import datasource_update
from governance.services.sync import datasource_sync
from observability.logs import JsonFormatter
from tests import tls_target
from tests.vault import Vault, vault_server  # noqa: F401 - the stand-in Vault, a fixture

pytestmark = pytest.mark.django_db(transaction=True)

OLD = crypto.generate_key()
NEW = crypto.generate_key()


def portal_password() -> str:
    return tls_target.current().portal_password


def set_portal_password(password: str) -> None:
    """Change the portal role's password on the target, as its DBA would when rotating it."""
    conn = tls_target.current().superuser()
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(tls_target.current().portal_role)), [password]
        )
    conn.close()
    from governance.provisioners import postgres as pg

    pg.POOL.close_all()  # new sessions authenticate again


def test_rotation_re_encrypts_and_every_source_stays_connectable(target_source: DataSource, gov_admin: Any) -> None:
    with override_settings(FIELD_ENCRYPTION_KEYS=[OLD]):
        datasource_update(source=target_source, actor=gov_admin, password=portal_password())
        target_source.refresh_from_db()
        before = target_source.password_encrypted
    with override_settings(FIELD_ENCRYPTION_KEYS=[NEW, OLD]):
        out = io.StringIO()
        call_command("rotate_encryption_keys", stdout=out)
        assert "1 data source password(s)" in out.getvalue()
    target_source.refresh_from_db()
    assert target_source.password_encrypted != before
    with override_settings(FIELD_ENCRYPTION_KEYS=[NEW]):  # the old key is gone
        assert crypto.decrypt(target_source.password_encrypted) == portal_password()
        datasource_sync(source=target_source)  # connects with the re-encrypted password (raises if not)
        target_source.refresh_from_db()
        assert target_source.last_sync_error == ""
    event = AuditEvent.objects.get(action="encryption_keys.rotated")
    with override_settings(FIELD_ENCRYPTION_KEYS=[NEW]):
        assert event.metadata == {
            "key": crypto.key_fingerprint(0),
            "sources": 1,
            "grants": 0,
            "webhooks": 0,
            "rotations": 0,
            "pseudonym_keys": 0,
            "unchanged": 0,
        }
    assert portal_password() not in json.dumps(event.metadata)


def test_rotation_re_encrypts_a_rotation_s_pending_password(target_source: DataSource, gov_admin: Any) -> None:
    """A credential rotation that could not finish keeps its new password encrypted until it is
    stored: retiring the key it was encrypted under must not make it unreadable."""
    with override_settings(FIELD_ENCRYPTION_KEYS=[OLD]):
        datasource_update(source=target_source, actor=gov_admin, password=portal_password())
        pending = CredentialRotation.objects.create(
            source=target_source,
            trigger=RotationTrigger.SCHEDULED,
            status=RotationStatus.FAILED,
            started_at=target_source.created_at,
            pending_secret=crypto.encrypt("the-new-password"),
        )
    with override_settings(FIELD_ENCRYPTION_KEYS=[NEW, OLD]):
        out = io.StringIO()
        call_command("rotate_encryption_keys", stdout=out)
        assert "1 pending rotation password(s)" in out.getvalue()
    pending.refresh_from_db()
    with override_settings(FIELD_ENCRYPTION_KEYS=[NEW]):  # the old key is gone
        assert crypto.decrypt(pending.pending_secret) == "the-new-password"
        assert AuditEvent.objects.get(action="encryption_keys.rotated").metadata["rotations"] == 1


def test_rotation_with_an_unknown_key_changes_nothing(target_source: DataSource, gov_admin: Any) -> None:
    with override_settings(FIELD_ENCRYPTION_KEYS=[OLD]):
        datasource_update(source=target_source, actor=gov_admin, password="orphaned")
    target_source.refresh_from_db()
    before = target_source.password_encrypted
    with override_settings(FIELD_ENCRYPTION_KEYS=[NEW]), pytest.raises(CommandError, match=target_source.name):
        call_command("rotate_encryption_keys")
    target_source.refresh_from_db()
    assert target_source.password_encrypted == before
    assert not AuditEvent.objects.filter(action="encryption_keys.rotated").exists()


def test_the_canary_password_appears_nowhere(
    target_source: DataSource, gov_admin: Any, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    canary = f"CANARY-{secrets.token_hex(8)}"
    set_portal_password(canary)  # the target really takes it: the sync below logs in with it
    request.addfinalizer(lambda: set_portal_password(portal_password()))
    caplog.set_level(logging.DEBUG)
    # The JSON logs production writes (LOG_FORMAT=json): every line, with its request line and context.
    json_out = io.StringIO()
    json_handler = logging.StreamHandler(json_out)
    json_handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(json_handler)
    request.addfinalizer(lambda: logging.getLogger().removeHandler(json_handler))
    seen: list[str] = []
    # Through the API: set it, read the source back, list sources.
    api = APIClient()
    issued = api_token_create(user=gov_admin, actor=gov_admin, scopes=["read", "admin"], name="canary")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    url = f"/api/v1/sources/{target_source.name}/"
    response = api.patch(url, {"password": canary}, format="json")
    assert response.status_code == 200, response.content
    seen += [response.content.decode(), api.get(url).content.decode(), api.get("/api/v1/sources/").content.decode()]
    # Through the admin: the change page and a save that leaves the password field empty.
    admin = Client()
    admin.force_login(gov_admin)
    seen.append(admin.get(f"/admin/governance/datasource/{target_source.pk}/change/").content.decode())
    # Using it: a sync (logs), and a failure that reports the connection error.
    target_source.refresh_from_db()
    datasource_sync(source=target_source)
    DataSource.objects.filter(pk=target_source.pk).update(port=1)
    target_source.refresh_from_db()
    with pytest.raises(Exception) as failed:  # any refusal: its text is what is checked
        datasource_sync(source=target_source)
    seen.append(str(failed.value))
    target_source.refresh_from_db()
    assert target_source.last_sync_error, "the failing sync should say why"
    seen.append(target_source.last_sync_error)
    seen.append(admin.get(f"/admin/governance/datasource/{target_source.pk}/change/").content.decode())
    # Everything the portal wrote down.
    seen += [json.dumps([e.changes, e.metadata, e.reason, e.target_repr]) for e in AuditEvent.objects.all()]
    seen += [json.dumps([j.statements, j.last_error]) for j in ProvisioningJob.objects.all()]
    seen += [r.getMessage() for r in caplog.records] + [caplog.text]
    json_lines = [json.loads(line) for line in json_out.getvalue().splitlines()]
    assert any(line.get("http", {}).get("method") == "PATCH" for line in json_lines), "the JSON request lines"
    seen.append(json_out.getvalue())
    assert AuditEvent.objects.filter(action__startswith="datasource.").exists()
    leaks = [text[:200] for text in seen if canary in text]
    assert not leaks, leaks
    # The canary was really stored (encrypted), so the test looked at something real.
    target_source.refresh_from_db()
    assert crypto.decrypt(target_source.password_encrypted) == canary


# --- passwords by reference ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secrets_manager() -> Any:
    """moto's server on a free port: a real HTTP Secrets Manager endpoint for boto3."""
    import shutil
    import socket
    import subprocess
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    proc = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    yield url
    proc.terminate()
    proc.wait(10)


def test_an_env_reference_is_resolved_at_use_and_its_absence_is_a_clear_error(
    target_source: DataSource, gov_admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from governance.provisioning import target_for
    from governance.secrets import clear_cache

    clear_cache()
    monkeypatch.setenv("GOV_TEST_WAREHOUSE_PASSWORD", portal_password())
    datasource_update(source=target_source, actor=gov_admin, password_ref="env:GOV_TEST_WAREHOUSE_PASSWORD")
    DataSource.objects.filter(pk=target_source.pk).update(password_encrypted="")  # only the reference is left
    target_source.refresh_from_db()
    assert target_for(target_source).password == portal_password()
    datasource_sync(source=target_source)  # logs in with the password from the environment
    monkeypatch.delenv("GOV_TEST_WAREHOUSE_PASSWORD")
    clear_cache()
    with pytest.raises(Exception, match="GOV_TEST_WAREHOUSE_PASSWORD"):
        datasource_sync(source=target_source)
    with pytest.raises(Exception, match="env:NAME, aws-sm:SECRET_ID#KEY, vault:PATH#KEY or vault-db:MOUNT/ROLE"):
        datasource_update(source=target_source, actor=gov_admin, password_ref="file:/etc/shadow")


def test_an_aws_secrets_manager_reference_is_read_through_the_api_and_cached(
    target_source: DataSource, gov_admin: Any, secrets_manager: str
) -> None:
    import boto3

    from governance.provisioning import target_for
    from governance.secrets import clear_cache

    client = boto3.client("secretsmanager", region_name="eu-west-1", endpoint_url=secrets_manager)
    client.create_secret(Name="prod/warehouse", SecretString=json.dumps({"password": portal_password()}))
    with override_settings(AWS_REGION="eu-west-1", AWS_SECRETS_MANAGER_ENDPOINT_URL=secrets_manager):
        clear_cache()
        datasource_update(source=target_source, actor=gov_admin, password_ref="aws-sm:prod/warehouse#password")
        DataSource.objects.filter(pk=target_source.pk).update(password_encrypted="")  # only the reference is left
        target_source.refresh_from_db()
        assert target_for(target_source).password == portal_password()
        datasource_sync(source=target_source)  # logs in with the password read from Secrets Manager
        client.put_secret_value(SecretId="prod/warehouse", SecretString=json.dumps({"password": "sm-value-2"}))
        assert target_for(target_source).password == portal_password()  # cached for SECRET_CACHE_SECONDS
        clear_cache()
        assert target_for(target_source).password == "sm-value-2"  # a rotated secret is picked up
        from governance.provisioners import postgres as pg

        pg.POOL.close_all()
        with pytest.raises(Exception, match="password authentication failed"):
            datasource_sync(source=target_source)  # ...and really used: the target refuses that one
        datasource_update(source=target_source, actor=gov_admin, password_ref="aws-sm:prod/missing#password")
        target_source.refresh_from_db()
        with pytest.raises(Exception, match="ResourceNotFoundException"):
            datasource_sync(source=target_source)
    target_source.refresh_from_db()
    assert "sm-value" not in target_source.last_sync_error
    assert not AuditEvent.objects.filter(changes__icontains="sm-value").exists()


def test_a_vault_reference_is_read_with_hvac_cached_and_refused_clearly(
    target_source: DataSource,
    gov_admin: Any,
    vault_server: Vault,  # noqa: F811 - the fixture imported above
) -> None:
    from governance.provisioning import target_for
    from governance.secrets import clear_cache

    vault_server.put("databases/warehouse", {"password": portal_password(), "user": "ignored"})
    with override_settings(VAULT_ADDR=vault_server.url, VAULT_TOKEN=vault_server.token):
        clear_cache()
        datasource_update(source=target_source, actor=gov_admin, password_ref="vault:databases/warehouse#password")
        DataSource.objects.filter(pk=target_source.pk).update(password_encrypted="")  # only the reference is left
        target_source.refresh_from_db()
        datasource_sync(source=target_source)  # logs in with the password read from Vault
        datasource_sync(source=target_source)
        assert vault_server.calls.count("GET secret/data/databases/warehouse") == 1  # cached for SECRET_CACHE_SECONDS
        assert target_for(target_source).password == portal_password()

        for ref, message in [
            ("vault:databases/missing#password", "Vault has no secret at vault:databases/missing"),
            ("vault:databases/warehouse#pasword", "has no field 'pasword'"),
        ]:
            clear_cache()
            datasource_update(source=target_source, actor=gov_admin, password_ref=ref)
            target_source.refresh_from_db()
            with pytest.raises(Exception, match=message):
                datasource_sync(source=target_source)
    with override_settings(VAULT_ADDR=vault_server.url, VAULT_TOKEN="not-the-token"):
        clear_cache()
        with pytest.raises(Exception, match="Vault refused vault:databases/warehouse#pasword"):
            datasource_sync(source=target_source)
    with override_settings(VAULT_ADDR="", VAULT_TOKEN=""):
        clear_cache()
        with pytest.raises(Exception, match="needs VAULT_ADDR and VAULT_TOKEN"):
            datasource_sync(source=target_source)
    with pytest.raises(Exception, match="vault:PATH#KEY"):
        datasource_update(source=target_source, actor=gov_admin, password_ref="vault:../sys/raw#x")
    target_source.refresh_from_db()
    assert portal_password() not in target_source.last_sync_error
    assert not AuditEvent.objects.filter(changes__icontains=portal_password()).exists()
    clear_cache()
