"""The portal's own login leased from Vault's database secrets engine (`vault-db:`), for real.

Vault is the stand-in of tests/vault_database.py (no Vault server is installable here): real HTTP,
reached through hvac, making REAL logins on the TLS target cluster with the creation statements
docs/security.md gives (a member of the least-privileged `portal_provisioner`, acting as it). The
portal syncs, provisions and revokes as that login; time is moved on by `advance` (the stand-in's
clock and the portal's together), never slept through.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from django.apps import apps
from django.db import connection
from django.test import Client, override_settings
from rest_framework.test import APIClient

from accounts.tokens import api_token_create
from audit.models import AuditEvent
from compliance.controls import compliance_posture
from governance import dynamic_credentials
from governance.admin_catalog import DataSourceForm
from governance.errors import ConflictError, InvalidInput
from governance.models import Dataset, DataSource, Grant, GrantStatus, JobStatus, ProvisioningJob
from governance.provisioners import postgres as pg
from governance.provisioning import grant_principal, target_for
from governance.services import publishing
from governance.services.catalog import datasource_create, datasource_update
from governance.services.credentials import datasource_credentials_rotate
from governance.services.engine.run import provisioning_job_run
from governance.services.grants import grant_revoke
from governance.services.requests import access_request_approve, access_request_submit
from governance.services.sync import datasource_sync
from tests import tls_target, vault_database
from tests.provisioning.conftest import admin_connection, target_can

pytestmark = pytest.mark.django_db(transaction=True)

REF = "vault-db:database/portal"


@pytest.fixture
def vault(target_dbname: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[vault_database.VaultDatabase]:
    """The stand-in with the role `database/portal` (TTL 60 s, max 300 s) on the target database,
    the portal's settings pointing at it, and one clock for both that `vault.advance` moves on."""
    served = vault_database.serve()
    stand_in = next(served)
    stand_in.roles["database/portal"] = vault_database.Role(dbname=target_dbname, default_ttl=60, max_ttl=300)
    monkeypatch.setattr(dynamic_credentials, "clock", stand_in.clock)  # one clock for both
    # The tests run the jobs themselves (run_jobs): no message may reach a session worker started by
    # another test, whose environment knows nothing of this stand-in.
    monkeypatch.setattr(publishing, "send", lambda *args, **options: None)
    dynamic_credentials.reset()
    with override_settings(
        VAULT_ADDR=stand_in.url,
        VAULT_TOKEN=stand_in.token,
        VAULT_DB_RENEW_INTERVAL_SECONDS=0,
        PROVISIONING_RETRY_BASE_SECONDS=0,
    ):
        yield stand_in
    dynamic_credentials.reset()
    pg.POOL.close_all()
    served.close()


@pytest.fixture
def leased_source(target_source: DataSource, gov_admin: Any, vault: vault_database.VaultDatabase) -> DataSource:
    """The synced target source, switched to a login leased from Vault: no password, no username."""
    datasource_update(source=target_source, actor=gov_admin, password_ref=REF)
    DataSource.objects.filter(pk=target_source.pk).update(password_encrypted="", username="")
    target_source.refresh_from_db()
    return target_source


def run_jobs(grant: Grant) -> list[ProvisioningJob]:
    for job in ProvisioningJob.objects.filter(grant=grant, status=JobStatus.QUEUED):
        provisioning_job_run(job_id=job.pk)
    return list(ProvisioningJob.objects.filter(grant=grant).order_by("pk"))


def approved(table: str, requester: Any, approver: Any) -> Grant:
    """A grant of `table` (schema.name) approved, its jobs queued."""
    schema, name = table.split(".", 1)
    dataset = Dataset.objects.get(source__password_ref=REF, schema=schema, name=name)
    req = access_request_submit(requester=requester, dataset=dataset, justification="q4", duration=dt.timedelta(days=1))
    access_request_approve(access_request=req, approver=approver)
    return Grant.objects.get(source_request=req)


def provision(table: str, requester: Any, approver: Any) -> Grant:
    grant = approved(table, requester, approver)
    jobs = run_jobs(grant)
    grant.refresh_from_db()
    assert grant.status == GrantStatus.ACTIVE, [(j.status, j.last_error) for j in jobs]
    return grant


def sessions_of(username: str) -> int:
    conn = admin_connection()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", [username])
        (count,) = cur.fetchone()
    conn.close()
    return int(count)


def role_exists(username: str) -> bool:
    conn = admin_connection()
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [username])
        found = cur.fetchone() is not None
    conn.close()
    return found


def lease_of(source: DataSource) -> dynamic_credentials.Lease:
    lease = dynamic_credentials.current(source.pk)
    assert lease is not None
    return lease


def test_a_vault_db_source_syncs_and_provisions_as_the_login_vault_made(
    leased_source: DataSource, vault: vault_database.VaultDatabase, owner: Any, analyst: Any
) -> None:
    datasource_sync(source=leased_source)  # logs in as a login Vault made for this process
    assert vault.count("creds") == 1
    lease = lease_of(leased_source)
    assert lease.username.startswith("v-token-portal-") and role_exists(lease.username)

    grant = provision("finance.ledger", analyst, owner)
    role = grant_principal(grant).db_role
    assert target_can(leased_source.database, role, "SELECT amount FROM finance.ledger")
    # The job ran as the leased login (its pooled session is still open), on the same lease.
    assert sessions_of(lease.username) >= 1
    assert vault.count("creds") == 1 and lease_of(leased_source) is lease
    conn = admin_connection()
    with conn.cursor() as cur:
        cur.execute(
            "SELECT rolsuper, rolcreaterole, pg_has_role(rolname, %s, 'USAGE') FROM pg_roles WHERE rolname = %s",
            [tls_target.PORTAL_ROLE, lease.username],
        )
        assert cur.fetchone() == (False, False, True)  # no attribute of its own: the portal role's rights
        cur.execute(
            "SELECT bool_and(s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
            " WHERE a.usename = %s",
            [lease.username],
        )
        assert cur.fetchone()[0] is True  # over verify-full TLS, as the source says
    conn.close()

    grant_revoke(grant=grant, actor=owner, reason="done")
    run_jobs(grant)
    assert not target_can(leased_source.database, role, "SELECT amount FROM finance.ledger")


def test_the_lease_is_renewed_while_work_goes_on_and_replaced_near_its_max_ttl(
    leased_source: DataSource, vault: vault_database.VaultDatabase, owner: Any, analyst: Any
) -> None:
    vault.roles["database/portal"].max_ttl = 100
    provision("finance.ledger", analyst, owner)
    first = lease_of(leased_source)
    old_key = target_for(leased_source).key
    assert vault.count("renew") == 0  # fresh: more than a third of its TTL left

    vault.advance(45)  # 15 s of 60 left: the next use renews it (the stand-in gives 55, its max)
    provision("Sales EU.customers", analyst, owner)
    assert vault.count("renew") == 1 and vault.count("creds") == 1
    assert lease_of(leased_source) is first

    vault.advance(45)  # 10 s left, and the max TTL allows no more than that: a new lease
    hostile = 'finance.Order "Lines"; DROP TABLE x; --'
    grant = provision(hostile, analyst, owner)
    assert vault.count("renew") == 2 and vault.count("creds") == 2
    second = lease_of(leased_source)
    assert second.username != first.username
    query = 'SELECT amount FROM finance."Order ""Lines""; DROP TABLE x; --"'
    assert target_can(leased_source.database, grant_principal(grant).db_role, query)
    # The old login's pooled connections are retired (closed), not reused; the old lease is left
    # to Vault, not revoked: its login still exists until its TTL.
    assert sessions_of(first.username) == 0 and role_exists(first.username)
    assert old_key not in pg.POOL._idle or not pg.POOL._idle[old_key]
    assert vault.count("revoked") == 0


def test_after_vault_revokes_the_lease_the_next_job_takes_a_new_one(
    leased_source: DataSource, vault: vault_database.VaultDatabase, owner: Any, analyst: Any
) -> None:
    provision("finance.ledger", analyst, owner)
    first = lease_of(leased_source)
    assert sessions_of(first.username) >= 1  # the pooled connection

    vault.advance(61)  # not renewed by its TTL: the stand-in expires it (sessions ended, role dropped)
    assert vault.count("expired") == 1 and not role_exists(first.username)
    grant = provision("Sales EU.customers", analyst, owner)
    [job] = ProvisioningJob.objects.filter(grant=grant)
    assert job.attempts == 1  # the old pooled connection was not tried
    assert vault.count("creds") == 2 and lease_of(leased_source).username != first.username

    # Revoked early by an operator (`vault lease revoke`), while the portal thinks it has time: the
    # target refuses the login once, the lease is dropped, the retry takes a new one.
    second = lease_of(leased_source)
    vault._revoke(second.lease_id, "revoked")
    pg.POOL.close_all()  # the stand-in ended its sessions; a new connection must log in
    grant = approved('finance.Order "Lines"; DROP TABLE x; --', analyst, owner)
    jobs = run_jobs(grant)
    assert jobs[0].status == JobStatus.QUEUED and "authentication failed" in jobs[0].last_error
    assert second.username not in jobs[0].last_error  # a leased login's name is as secret as its password
    jobs = run_jobs(grant)
    assert jobs[0].status == JobStatus.SUCCEEDED, jobs[0].last_error
    assert vault.count("creds") == 3


def test_vault_refusing_is_a_clear_failure_naming_the_source(
    leased_source: DataSource, vault: vault_database.VaultDatabase, owner: Any, analyst: Any
) -> None:
    datasource_sync(source=leased_source)
    lease = lease_of(leased_source)
    vault.denied = True
    vault.advance(45)  # renewal due and refused, no new login given: the current one is used to its TTL
    datasource_sync(source=leased_source)
    assert lease_of(leased_source) is lease
    vault.advance(16)  # expired (the stand-in drops its login): now nothing works
    with pytest.raises(Exception, match=f"Vault refused a login for {leased_source.name} .*permission denied"):
        datasource_sync(source=leased_source)
    leased_source.refresh_from_db()
    assert "permission denied" in leased_source.last_sync_error and leased_source.name in leased_source.last_sync_error

    [job] = run_jobs(approved("finance.ledger", analyst, owner))
    assert job.status == JobStatus.QUEUED  # retried: Vault may come back
    assert f"Vault refused a login for {leased_source.name} ({REF}): permission denied." in job.last_error

    vault.denied = False  # Vault back: the retry leases a login and succeeds
    assert job.grant is not None
    [job] = run_jobs(job.grant)
    assert job.status == JobStatus.SUCCEEDED, job.last_error


def test_vault_down_keeps_the_current_lease_until_its_ttl(
    leased_source: DataSource,
    vault: vault_database.VaultDatabase,
    owner: Any,
    analyst: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    provision("finance.ledger", analyst, owner)
    lease = lease_of(leased_source)
    with override_settings(VAULT_ADDR="http://127.0.0.1:9"):  # nothing listens there
        vault.advance(45)  # renewal is due and fails: the lease is used while it lasts
        provision("Sales EU.customers", analyst, owner)
        target_for(leased_source)
        assert lease_of(leased_source) is lease
        tried = [r for r in caplog.records if "Vault could not renew the lease" in r.getMessage()]
        assert len(tried) == 1  # tried once, then quiet: not a Vault timeout at every use
        vault.advance(20)  # past its TTL (and expired in Vault): no login left, a clear error
        with pytest.raises(Exception, match=f"Vault could not be reached for a login for {leased_source.name}"):
            datasource_sync(source=leased_source)


def test_a_dynamic_login_is_not_rotated_and_the_posture_shows_its_lease(
    leased_source: DataSource, vault: vault_database.VaultDatabase, officer: Any, gov_admin: Any
) -> None:
    datasource_sync(source=leased_source)
    with pytest.raises(ConflictError, match=r"login is dynamic, from Vault .*lease TTL 60 s"):
        datasource_credentials_rotate(source=leased_source, actor=gov_admin)
    posture = compliance_posture()
    [age] = posture.credentials
    assert (age.held, age.limit_days, age.overdue, age.rotated_by_portal) == ("dynamic", None, False, False)
    assert age.changed_at is not None and age.age_days == 0  # when this process took its lease
    control = next(r for r in posture.controls if r.key == "credentials_rotated")
    assert control.status == "pass", control.reason
    client = Client()
    client.force_login(officer)
    page = client.get("/portal/compliance/").content.decode()
    row = page.split(f'<tr id="credential-{leased_source.name}" data-overdue="no">', 1)[1].split("</tr>", 1)[0]
    assert "dynamic (Vault lease)" in row and "lease 0\xa0minutes" in row


def test_a_vault_db_reference_is_validated_naming_the_field(target_source: DataSource, gov_admin: Any) -> None:
    api = APIClient()
    issued = api_token_create(user=gov_admin, actor=gov_admin, scopes=["read", "admin"], name="vault-db")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    url = f"/api/v1/sources/{target_source.name}/"
    for ref in ("vault-db:database", "vault-db:../sys/portal", "vault-db:database/por tal"):
        response = api.patch(url, {"password_ref": ref}, format="json")
        assert response.status_code == 400, response.content
        assert "password_ref" in response.content.decode() and "vault-db:MOUNT/ROLE" in response.content.decode()
    # The API cannot make an AWS source (its kind is read-only there); the service refuses it the same way.
    with pytest.raises(InvalidInput, match="A vault-db: login is for PostgreSQL sources") as refused:
        datasource_create(actor=gov_admin, name="s3-lake", kind="aws", password_ref=REF, aws_account_id="123456789012")
    assert refused.value.field == "password_ref"
    assert api.patch(url, {"password_ref": REF}, format="json").status_code == 200
    # The admin's form: an error on the field itself.
    form = DataSourceForm(data={"name": "w2", "kind": "postgresql", "password_ref": "vault-db:database"})
    assert "vault-db:MOUNT/ROLE" in str(form.errors.get("password_ref")), form.errors


def test_the_leased_login_appears_nowhere_the_portal_writes(
    leased_source: DataSource,
    vault: vault_database.VaultDatabase,
    owner: Any,
    analyst: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    canary = f"CANARY-{secrets.token_hex(8)}"
    vault.password_prefix = canary
    grant = provision("finance.ledger", analyst, owner)
    lease = lease_of(leased_source)
    assert lease.password.startswith(canary)
    grant_revoke(grant=grant, actor=owner, reason="done")
    run_jobs(grant)
    vault._revoke(lease.lease_id, "revoked")  # a refused login: error messages too
    pg.POOL.close_all()
    failed = run_jobs(approved("Sales EU.customers", analyst, owner))
    assert "authentication failed" in failed[0].last_error
    # Every row of every table of the portal's database, as text, and every log line.
    dump: list[str] = []
    with connection.cursor() as cur:
        for model in apps.get_models():
            if not model._meta.managed or model._meta.proxy:  # views (pghistory's events): their tables are read
                continue
            table = connection.ops.quote_name(model._meta.db_table)
            cur.execute(f"SELECT row_to_json(t)::text FROM {table} t")  # model table names, quoted
            dump += [row[0] for row in cur.fetchall()]
    assert any("authentication failed" in row for row in dump), "the dump holds the failed job"
    texts = [*dump, caplog.text, *(r.getMessage() for r in caplog.records)]
    for secret in (lease.password, lease.username, canary):
        leaks = [text[:200] for text in texts if secret in text]
        assert not leaks, (secret, leaks)
    assert json.dumps([e.metadata for e in AuditEvent.objects.all()])  # the audit trail was read too


def test_the_process_renews_its_leases_in_the_background(
    leased_source: DataSource, vault: vault_database.VaultDatabase
) -> None:
    with override_settings(VAULT_DB_RENEW_INTERVAL_SECONDS=0.05):
        datasource_sync(source=leased_source)
        vault.advance(41)  # past a third of its TTL: the thread's next round renews it
        assert vault.wait_for(lambda: vault.count("renew") >= 1)
    lease = lease_of(leased_source)
    assert lease.left() > 40  # renewed by the stand-in's full TTL again
