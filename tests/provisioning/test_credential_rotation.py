"""Rotation of the portal's own password on a real PostgreSQL target (docs/security.md#credential-rotation).

The target is the TLS cluster of tests/tls_target.py, reached as its least-privileged portal role,
which changes its own password. Every test puts the role's original password back at the end (the
cluster is shared by the session).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from django.utils import timezone
from prometheus_client import REGISTRY
from psycopg2 import sql

from audit.models import AuditEvent, Outcome
from compliance.controls import compliance_posture
from governance import crypto
from governance.errors import ConflictError
from governance.models import (
    CredentialRotation,
    Dataset,
    DataSource,
    Grant,
    GrantStatus,
    ProvisioningJob,
    RotationStatus,
    RotationTrigger,
)
from governance.provisioners.scram import scram_sha256_matches
from governance.provisioning import grant_principal
from governance.services.credentials import datasource_credential_ages_refresh, datasource_credentials_rotate
from governance.services.requests import access_request_approve, access_request_submit
from governance.tasks import rotate_source_credentials
from notifications.models import Delivery, Kind, Notification
from notifications.services.delivery import notification_prepare
from tests import tls_target
from tests.provisioning.conftest import dba, target_can, wait_for
from tests.provisioning.test_secrets import secrets_manager  # noqa: F401 - moto's Secrets Manager, a fixture
from tests.vault import Vault, vault_server  # noqa: F401 - the stand-in Vault (tests/vault.py), a fixture

pytestmark = pytest.mark.django_db(transaction=True)


def portal_password() -> str:
    return tls_target.current().portal_password


def logs_in(password: str, dbname: str) -> bool:
    """Whether the portal role logs in with `password` (a new connection, verify-full TLS)."""
    cluster = tls_target.current()
    try:
        conn = psycopg2.connect(
            host=cluster.host,
            port=cluster.port,
            dbname=dbname,
            user=cluster.portal_role,
            password=password,
            sslmode="verify-full",
            sslrootcert=crypto.ca_bundle_path(cluster.ca_pem),
            connect_timeout=5,
        )
    except psycopg2.OperationalError as exc:
        assert "password authentication failed" in str(exc), exc
        return False
    conn.close()
    return True


def rotations_counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("governance_credential_rotations_total", {"outcome": outcome}) or 0.0


@pytest.fixture(autouse=True)
def original_password_back() -> Iterator[None]:
    """The role's original password and no connection limit, whatever the test did."""
    yield
    role = sql.Identifier(tls_target.current().portal_role)
    conn = tls_target.current().superuser()
    with conn.cursor() as cur:
        cur.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT -1 PASSWORD %s").format(role), [portal_password()])
    conn.close()
    from governance.provisioners import postgres as pg

    pg.POOL.close_all()


@pytest.mark.usefixtures("celery_worker")
def test_a_scheduled_rotation_changes_the_password_and_the_next_job_uses_it(
    target_source: DataSource, analyst: Any, owner: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    db = target_source.database
    dba(db, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements", "SELECT pg_stat_statements_reset()")
    DataSource.objects.filter(pk=target_source.pk).update(credential_changed_at=timezone.now() - dt.timedelta(days=31))
    rotated_before = rotations_counted("rotated")

    assert rotate_source_credentials() == {"rotated": 1, "failed": 0, "skipped": 0, "ages_read": 0}

    target_source.refresh_from_db()
    new = crypto.decrypt(target_source.password_encrypted)
    assert new != portal_password()
    assert logs_in(new, db)
    assert not logs_in(portal_password(), db), "the old password must no longer log in"
    changed = target_source.credential_changed_at
    assert changed is not None and timezone.now() - changed < dt.timedelta(minutes=1)
    rotation = CredentialRotation.objects.get(source=target_source)
    assert (rotation.status, rotation.trigger, rotation.pending_secret) == (
        RotationStatus.ROTATED,
        RotationTrigger.SCHEDULED,
        "",
    )
    assert rotations_counted("rotated") == rotated_before + 1

    # The next provisioning job, run by the real worker (whose pool held sessions opened with the
    # old password), logs in with the new one.
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    req = access_request_submit(requester=analyst, dataset=ds, justification="close", duration=dt.timedelta(days=1))
    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)
    wait_for(lambda: Grant.objects.get(pk=grant.pk).status == GrantStatus.ACTIVE, timeout=30)
    assert target_can(db, grant_principal(grant).db_role, "SELECT * FROM finance.ledger")

    # Audited as the scheduler's act, and the new password is nowhere but the encrypted field.
    event = AuditEvent.objects.get(action="datasource.credential_rotated")
    assert event.actor is None and event.source == "task" and event.target_repr == target_source.name
    assert event.metadata["trigger"] == "scheduled"
    seen = [json.dumps([e.changes, e.metadata, e.reason, e.target_repr]) for e in AuditEvent.objects.all()]
    seen += [json.dumps([j.statements, j.last_error]) for j in ProvisioningJob.objects.all()]
    seen += [json.dumps(n.context) for n in Notification.objects.all()]
    seen += [r.error + r.pending_secret for r in CredentialRotation.objects.all()]
    seen += [r.getMessage() for r in caplog.records]
    # The target never saw the plaintext: the statement it ran carried a SCRAM verifier.
    conn = tls_target.current().superuser(db)
    with conn.cursor() as cur:
        cur.execute("SELECT query FROM pg_stat_statements")
        statements = [row[0] for row in cur.fetchall()]
        cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [tls_target.current().portal_role])
        stored = cur.fetchone()[0]
    conn.close()
    assert any("ALTER ROLE" in q and "SCRAM-SHA-256$" in q for q in statements), statements
    seen += statements
    leaks = [text[:200] for text in seen if new in text]
    assert not leaks, leaks
    assert scram_sha256_matches(new, stored)


def test_a_failed_new_connection_keeps_the_old_password_and_raises_a_finding(
    target_source: DataSource, gov_admin: Any, owner: Any
) -> None:
    from governance.provisioners import postgres as pg

    pg.POOL.close_all()
    db = target_source.database
    role = tls_target.current().portal_role
    conn = tls_target.current().superuser()
    with conn.cursor() as cur:
        # The target itself refuses the check: the rotation's own session takes the role's last
        # connection slot, so the new connection with the new password is turned away.
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", [role])
        open_sessions = cur.fetchone()[0]
        cur.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT %s").format(sql.Identifier(role)), [open_sessions + 1])
    conn.close()
    failed_before = rotations_counted("failed")

    rotation = datasource_credentials_rotate(source=target_source, actor=gov_admin)

    assert rotation.status == RotationStatus.FAILED
    assert "too many connections" in rotation.error and rotation.pending_secret == ""
    target_source.refresh_from_db()
    assert crypto.decrypt(target_source.password_encrypted) == portal_password()
    assert logs_in(portal_password(), db), "the old password must still log in"
    # A finding, a notification, a metric, an audit event with the actor.
    assert list(CredentialRotation.objects.open_findings()) == [rotation]
    notice = Notification.objects.get(kind=Kind.ROTATION_FAILED)
    assert notice.context == {"source": target_source.pk, "rotation": rotation.pk}
    notification_prepare(notification_id=notice.pk)  # or a session worker does
    # The actor is not told of their own act; the source's owner is.
    told = wait_for(lambda: Delivery.objects.filter(notification=notice, recipient=owner).first())
    assert told.subject == f"Credential rotation failed on {target_source.name}"
    assert "too many connections" in told.body_text and "old password still works" in told.body_text
    assert rotations_counted("failed") == failed_before + 1
    event = AuditEvent.objects.get(action="datasource.credential_rotation_failed")
    assert event.actor == gov_admin and event.outcome == Outcome.FAILED
    assert "too many connections" in event.reason
    posture = compliance_posture()
    control = next(r for r in posture.controls if r.key == "credentials_rotated")
    assert control.status == "fail" and target_source.name in control.reason
    [age] = posture.credentials
    assert (age.source, age.held, age.open_failures) == (target_source.name, "stored", 1)

    # Once the target takes new connections again, a rotation succeeds and resolves the finding.
    dba("postgres", sql.SQL("ALTER ROLE {} CONNECTION LIMIT -1").format(sql.Identifier(role)))
    again = datasource_credentials_rotate(source=target_source, actor=gov_admin)
    assert again.status == RotationStatus.ROTATED
    assert not CredentialRotation.objects.open_findings().exists()
    assert not logs_in(portal_password(), db)
    control = next(r for r in compliance_posture().controls if r.key == "credentials_rotated")
    assert control.status == "pass", control.reason


def test_a_rotation_left_pending_by_a_dead_process_is_settled_not_lost(
    target_source: DataSource, gov_admin: Any
) -> None:
    """The process died after ALTER ROLE: the target has the pending password, the field the old one."""
    pending = secrets.token_urlsafe(30)
    CredentialRotation.objects.create(
        source=target_source,
        trigger=RotationTrigger.SCHEDULED,
        started_at=timezone.now() - dt.timedelta(hours=1),
        pending_secret=crypto.encrypt(pending),
    )
    role = sql.Identifier(tls_target.current().portal_role)
    dba("postgres", sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(pending)))

    rotation = datasource_credentials_rotate(source=target_source, actor=gov_admin)

    assert rotation.status == RotationStatus.ROTATED
    statuses = list(CredentialRotation.objects.order_by("pk").values_list("status", flat=True))
    assert statuses == [RotationStatus.ROTATED, RotationStatus.ROTATED]  # the pending one was promoted first
    target_source.refresh_from_db()
    assert logs_in(crypto.decrypt(target_source.password_encrypted), target_source.database)
    assert not logs_in(pending, target_source.database)


def test_a_referenced_secret_is_not_written_its_age_is_reported(
    target_source: DataSource, gov_admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from governance.services.catalog import datasource_update

    monkeypatch.setenv("PORTAL_PG_PASSWORD", portal_password())
    datasource_update(source=target_source, actor=gov_admin, password_ref="env:PORTAL_PG_PASSWORD", password="")
    target_source.refresh_from_db()
    with pytest.raises(ConflictError, match="is a reference"):
        datasource_credentials_rotate(source=target_source, actor=gov_admin)
    assert not CredentialRotation.objects.exists()
    assert logs_in(portal_password(), target_source.database)
    assert datasource_credential_ages_refresh() == 0  # an environment variable has no date
    [age] = compliance_posture().credentials
    assert (age.held, age.age_days, age.overdue) == ("env", None, True)


def test_the_command_and_the_admin_action_rotate_on_demand(target_source: DataSource, gov_admin: Any) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.test import Client

    out = io.StringIO()
    call_command("rotate_source_credentials", target_source.name, stdout=out)
    assert out.getvalue().strip() == f"Rotated the portal's password on {target_source.name}."
    for args, message in [
        (["no-such-source"], "No data source named 'no-such-source'."),
        ([], "Name one source, or pass --due."),
    ]:
        with pytest.raises(CommandError, match=message):
            call_command("rotate_source_credentials", *args)
    assert AuditEvent.objects.get(action="datasource.credential_rotated").source == "cli"

    admin = Client()
    admin.force_login(gov_admin)
    response = admin.post(
        "/admin/governance/datasource/",
        {"action": "rotate_credentials", "_selected_action": [target_source.pk]},
        follow=True,
    )
    shown = [str(m) for m in response.context["messages"]]
    assert shown == [f"{target_source.name}: the portal's password was rotated."], shown
    latest = AuditEvent.objects.filter(action="datasource.credential_rotated").order_by("-id").first()
    assert latest is not None and latest.actor == gov_admin and latest.source == "admin"
    target_source.refresh_from_db()
    assert logs_in(crypto.decrypt(target_source.password_encrypted), target_source.database)
    assert CredentialRotation.objects.filter(status=RotationStatus.ROTATED).count() == 2
    page = admin.get("/admin/governance/credentialrotation/?state=open")
    assert page.status_code == 200


def test_an_aws_secret_the_portal_may_write_is_rotated_in_place(
    target_source: DataSource,
    gov_admin: Any,
    secrets_manager: str,  # noqa: F811 - the fixture imported above
) -> None:
    import boto3
    from django.test import override_settings

    from governance.secrets import clear_cache
    from governance.services.catalog import datasource_update
    from governance.services.sync import datasource_sync

    client = boto3.client("secretsmanager", region_name="eu-west-1", endpoint_url=secrets_manager)
    name = f"rotation/{secrets.token_hex(4)}"
    client.create_secret(Name=name, SecretString=json.dumps({"password": portal_password(), "host": "kept"}))
    with override_settings(AWS_REGION="eu-west-1", AWS_SECRETS_MANAGER_ENDPOINT_URL=secrets_manager):
        clear_cache()
        datasource_update(source=target_source, actor=gov_admin, password_ref=f"aws-sm:{name}#password", password="")
        target_source.refresh_from_db()
        with pytest.raises(ConflictError, match="may not write"):  # not allowed yet: its age only
            datasource_credentials_rotate(source=target_source, actor=gov_admin)
        assert datasource_credential_ages_refresh() == 1
        target_source.refresh_from_db()
        assert target_source.credential_changed_at is not None  # Secrets Manager's LastChangedDate
        [age] = compliance_posture().credentials
        assert (age.held, age.rotated_by_portal, age.limit_days) == ("aws-sm", False, 90)

        datasource_update(source=target_source, actor=gov_admin, rotate_secret_ref=True)
        target_source.refresh_from_db()
        rotation = datasource_credentials_rotate(source=target_source, actor=gov_admin)
        assert rotation.status == RotationStatus.ROTATED, rotation.error
        stored = json.loads(client.get_secret_value(SecretId=name)["SecretString"])
        assert stored["host"] == "kept" and stored["password"] != portal_password()
        assert logs_in(stored["password"], target_source.database)
        assert not logs_in(portal_password(), target_source.database)
        target_source.refresh_from_db()
        assert target_source.password_encrypted == ""  # nothing stored in the portal's database
        clear_cache()
        datasource_sync(source=target_source)  # logs in with the value read back from Secrets Manager
        event = AuditEvent.objects.get(action="datasource.credential_rotated")
        assert event.metadata["held"] == "aws-sm" and stored["password"] not in json.dumps(event.metadata)
        [age] = compliance_posture().credentials
        assert (age.held, age.rotated_by_portal, age.limit_days, age.age_days) == ("aws-sm", True, 30, 0)
    clear_cache()


def test_the_api_rotates_on_demand_and_refuses_clearly(
    target_source: DataSource, gov_admin: Any, analyst: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rest_framework.test import APIClient

    from accounts.tokens import api_token_create
    from governance.services.catalog import datasource_update

    def client(user: Any, scopes: list[str]) -> APIClient:
        api = APIClient()
        issued = api_token_create(user=user, actor=user, scopes=scopes, name="rotation")
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
        return api

    url = f"/api/v1/sources/{target_source.name}/rotate-credentials/"
    admin = client(gov_admin, ["read", "admin"])
    response = admin.post(url, {}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["source"], body["status"], body["trigger"], body["error"]) == (
        target_source.name,
        "rotated",
        "manual",
        "",
    )
    target_source.refresh_from_db()
    new = crypto.decrypt(target_source.password_encrypted)
    assert new not in response.content.decode() and logs_in(new, target_source.database)
    assert AuditEvent.objects.get(action="datasource.credential_rotated").actor == gov_admin

    assert admin.post(url, ["now"], format="json").status_code == 400  # an object, or nothing
    assert client(gov_admin, ["read"]).post(url, {}, format="json").status_code == 403  # scope
    assert client(analyst, ["read", "admin"]).post(url, {}, format="json").status_code in (403, 404)
    monkeypatch.setenv("PORTAL_PG_PASSWORD", new)
    datasource_update(source=target_source, actor=gov_admin, password_ref="env:PORTAL_PG_PASSWORD", password="")
    refused = admin.post(url, {}, format="json")
    assert refused.status_code == 409 and "may not write" in refused.json()["error"]["message"], refused.content
    assert CredentialRotation.objects.count() == 1


# --- a vault: reference the portal may write (KV version 2, against the stand-in of tests/vault.py) ---


@pytest.fixture
def vault_source(target_source: DataSource, gov_admin: Any, vault_server: Vault, settings: Any) -> Iterator[str]:  # noqa: F811
    """The source's password in Vault's KV (with another field beside it), by reference; rotated by the portal."""
    from governance.secrets import clear_cache
    from governance.services.catalog import datasource_update

    path = f"rotation/{secrets.token_hex(4)}"
    vault_server.put(path, {"password": portal_password(), "host": "kept"})
    settings.VAULT_ADDR, settings.VAULT_TOKEN = vault_server.url, vault_server.token
    clear_cache()
    datasource_update(source=target_source, actor=gov_admin, password_ref=f"vault:{path}#password", password="")
    target_source.refresh_from_db()
    yield path
    clear_cache()


def test_a_vault_secret_the_portal_may_write_is_rotated_in_place_by_the_schedule(
    target_source: DataSource,
    gov_admin: Any,
    vault_server: Vault,  # noqa: F811 - the fixture imported above
    vault_source: str,
) -> None:
    from governance.secrets import clear_cache
    from governance.services.catalog import datasource_update
    from governance.services.sync import datasource_sync

    with pytest.raises(ConflictError, match="may not write"):  # not allowed yet: its age only
        datasource_credentials_rotate(source=target_source, actor=gov_admin)
    datasource_update(source=target_source, actor=gov_admin, rotate_secret_ref=True)
    DataSource.objects.filter(pk=target_source.pk).update(credential_changed_at=timezone.now() - dt.timedelta(days=31))

    assert rotate_source_credentials() == {"rotated": 1, "failed": 0, "skipped": 0, "ages_read": 1}

    rotation = CredentialRotation.objects.get(source=target_source)
    assert (rotation.status, rotation.trigger) == (RotationStatus.ROTATED, RotationTrigger.SCHEDULED), rotation.error
    [first, second] = vault_server.kv[f"secret/{vault_source}"]
    assert second["metadata"]["version"] == 2 and first["data"]["password"] == portal_password()
    new = vault_server.latest(vault_source)
    assert new["host"] == "kept" and new["password"] != portal_password()
    assert logs_in(new["password"], target_source.database)
    assert not logs_in(portal_password(), target_source.database), "the old password must no longer log in"
    target_source.refresh_from_db()
    assert target_source.password_encrypted == ""  # nothing stored in the portal's database
    clear_cache()
    datasource_sync(source=target_source)  # logs in with the value read back from Vault
    target_source.refresh_from_db()
    assert target_source.last_sync_error == ""
    event = AuditEvent.objects.get(action="datasource.credential_rotated")
    assert event.metadata["held"] == "vault" and new["password"] not in json.dumps(event.metadata)
    [age] = compliance_posture().credentials
    assert (age.held, age.rotated_by_portal, age.age_days) == ("vault", True, 0)


def test_a_refused_vault_write_keeps_the_old_password_and_raises_a_finding(
    target_source: DataSource,
    gov_admin: Any,
    vault_server: Vault,  # noqa: F811 - the fixture imported above
    vault_source: str,
) -> None:
    from governance.services.catalog import datasource_update

    datasource_update(source=target_source, actor=gov_admin, rotate_secret_ref=True)
    target_source.refresh_from_db()
    vault_server.deny(f"secret/data/{vault_source}", method="POST")  # the token may read, not write

    rotation = datasource_credentials_rotate(source=target_source, actor=gov_admin)

    assert rotation.status == RotationStatus.FAILED
    assert rotation.error == (
        f"Writing the new password failed: Vault refused to write vault:{vault_source}#password: permission denied."
    )
    assert len(vault_server.kv[f"secret/{vault_source}"]) == 1  # nothing written
    assert logs_in(portal_password(), target_source.database), "the old password must still log in"
    assert list(CredentialRotation.objects.open_findings()) == [rotation]
    event = AuditEvent.objects.get(action="datasource.credential_rotation_failed")
    assert event.actor == gov_admin and event.outcome == Outcome.FAILED and "permission denied" in event.reason
    control = next(r for r in compliance_posture().controls if r.key == "credentials_rotated")
    assert control.status == "fail" and target_source.name in control.reason


def test_a_vault_write_is_check_and_set_a_concurrent_change_is_not_overwritten(
    vault_server: Vault,  # noqa: F811 - the fixture imported above
    vault_source: str,
) -> None:
    from governance.secrets import SecretUnavailable, write

    ref = f"vault:{vault_source}#password"
    vault_server.race(vault_source, {"password": "set-by-someone-else", "host": "moved"})
    with pytest.raises(SecretUnavailable, match=r"changed while the portal wrote it \(check-and-set on version 1"):
        write(ref, "the-portal's-value")
    assert vault_server.latest(vault_source) == {"password": "set-by-someone-else", "host": "moved"}
    write(ref, "the-portal's-value")  # read again: version 2, written as version 3
    assert vault_server.latest(vault_source) == {"password": "the-portal's-value", "host": "moved"}
