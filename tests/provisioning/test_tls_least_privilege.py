"""The target connection itself: verified TLS, as a portal role that is not a superuser.

Every provisioning test already goes through this connection (see tests/tls_target.py and the
conftest's `target_source`); these tests pin the properties themselves: every session the portal
opens is encrypted and its role is no superuser; a server certificate from another CA is refused
with a clear error; the server refuses the portal's role without TLS.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg2
import pytest

from governance.models import Dataset, DataSource, Grant, GrantStatus, JobStatus, ProvisioningJob
from governance.provisioning import grant_principal
from governance.services.engine.run import provisioning_job_run
from governance.services.grants import grant_revoke
from governance.services.requests import access_request_approve, access_request_submit
from governance.services.sync import datasource_sync
from tests.provisioning.conftest import admin_connection, target_can, wait_for
from tests.tls_target import TlsCluster, ca_and_server

pytestmark = pytest.mark.django_db(transaction=True)


def _run_jobs(grant: Grant) -> None:
    """Run the grant's queued jobs here, and wait for any a worker of another test claimed first
    (its message was published on commit): whoever runs a job, it is done when this returns."""
    for job in ProvisioningJob.objects.filter(grant=grant, status=JobStatus.QUEUED):
        provisioning_job_run(job_id=job.pk)
    wait_for(
        lambda: (
            not ProvisioningJob.objects.filter(grant=grant, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).exists()
        )
    )


def test_every_session_of_the_portal_is_encrypted_and_no_superuser(
    target_source: DataSource, target_server: TlsCluster, owner: Any, analyst: Any
) -> None:
    ledger = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    req = access_request_submit(requester=analyst, dataset=ledger, justification="close", duration=dt.timedelta(days=2))
    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)
    _run_jobs(grant)
    grant.refresh_from_db()
    assert grant.status == GrantStatus.ACTIVE, ProvisioningJob.objects.filter(grant=grant).values_list("last_error")
    role = grant_principal(grant).db_role
    assert target_can(target_source.database, role, "SELECT amount FROM finance.ledger")
    conn = admin_connection(target_source.database)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT bool_and(s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
            "WHERE a.usename = %s",
            [target_server.portal_role],
        )
        all_ssl, sessions = cur.fetchone()
        cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [target_server.portal_role])
        assert cur.fetchone()[0] is False
    conn.close()
    assert target_source.username == target_server.portal_role and target_source.sslmode == "verify-full"
    assert sessions >= 1 and all_ssl is True

    grant_revoke(grant=grant, actor=owner, reason="done")
    _run_jobs(grant)
    assert not target_can(target_source.database, role, "SELECT amount FROM finance.ledger")


def test_a_server_certificate_from_another_ca_is_refused(target_source: DataSource, target_server: TlsCluster) -> None:
    other_ca, _, _ = ca_and_server("other")
    source = DataSource.objects.get(pk=target_source.pk)
    DataSource.objects.filter(pk=source.pk).update(ssl_root_cert=other_ca.decode())
    source.refresh_from_db()
    with pytest.raises(Exception, match="certificate verify failed"):
        datasource_sync(source=source)
    source.refresh_from_db()
    assert "certificate verify failed" in source.last_sync_error
    assert target_server.portal_password not in source.last_sync_error


def test_the_portal_role_cannot_connect_without_tls(target_server: TlsCluster) -> None:
    with pytest.raises(psycopg2.OperationalError, match=r"no encryption|reject"):
        psycopg2.connect(
            host=target_server.host,
            port=target_server.port,
            dbname="postgres",
            user=target_server.portal_role,
            password=target_server.portal_password,
            sslmode="disable",
            connect_timeout=5,
        )
