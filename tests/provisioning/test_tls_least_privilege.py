"""Provisioning over verified TLS, as a portal role that is not a superuser.

A second PostgreSQL cluster is started from the machine's own PostgreSQL binaries (the wheel's
embedded build has no TLS) with TLS on and a certificate from a CA made for the test, through the
same helper `make run` uses for its embedded server. The portal connects with
`sslmode=verify-full` and that CA as the source's bundle, as the role docs/security.md describes
(CREATEROLE and grant options, not a superuser), and must: sync the catalog, apply an approved
grant that the grantee's role can then really use, and revoke it. A source with another CA is
refused with a clear error; the server refuses any connection of that role without TLS.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import ipaddress
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from psycopg2 import sql

from governance import crypto
from governance.models import Dataset, DataSource, Grant, GrantStatus, JobStatus, ProvisioningJob
from governance.provisioning import grant_principal
from governance.services.provisioning import provisioning_job_run
from governance.services.requests import access_request_approve, access_request_submit
from governance.services.sync import datasource_sync

ROOT = Path(__file__).resolve().parents[2]
PORTAL_ROLE = "portal_provisioner"
PORTAL_PASSWORD = secrets.token_urlsafe(18)

pytestmark = pytest.mark.django_db(transaction=True)


def _devstack() -> Any:
    spec = importlib.util.spec_from_file_location("devstack_for_tls", ROOT / "scripts" / "devstack.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["devstack_for_tls"] = module
    spec.loader.exec_module(module)
    return module


def _system_bindir() -> Path:
    """The machine's PostgreSQL binaries (Debian: /usr/lib/postgresql/<version>/bin), newest first."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if not candidates:
        pytest.fail("The TLS test needs the machine's PostgreSQL server binaries (Debian: postgresql)")
    return candidates[-1].parent


def _ca_and_server(folder: Path) -> tuple[bytes, bytes, bytes]:
    """A CA, and a server certificate it signs for 127.0.0.1 and localhost."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"governance test CA {folder.name}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    devstack = _devstack()
    state = tmp_path_factory.mktemp("tls-postgres")
    supervisor = devstack.Supervisor()
    server = devstack.EmbeddedPostgres(state, durable=False)
    server.bindir = _system_bindir()
    env = dict(os.environ)
    if server.run_as is not None:
        devstack.ensure_traversable(state)
        devstack.ensure_traversable(server.bindir)
    server._initdb(supervisor, env)
    ca_pem, cert_pem, key_pem = _ca_and_server(state)
    for name, data, mode in (("server.crt", cert_pem, 0o644), ("server.key", key_pem, 0o600)):
        path = server.pgdata / name
        path.write_bytes(data)
        path.chmod(mode)
        if server.run_as is not None:
            os.chown(path, server.run_as.pw_uid, server.run_as.pw_gid)
    with (server.pgdata / "postgresql.conf").open("a") as conf:
        conf.write("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
    hba = server.pgdata / "pg_hba.conf"
    # The portal's role gets in over TLS only; the superuser keeps password access for the setup.
    hba.write_text(
        f"hostnossl all {PORTAL_ROLE} 127.0.0.1/32 reject\n"
        f"hostssl all {PORTAL_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text()
    )
    service = server.start(supervisor, env)
    superuser = psycopg2.connect(service.url.rsplit("/", 1)[0] + "/postgres")
    superuser.autocommit = True
    with superuser.cursor() as cur:
        cur.execute("CREATE DATABASE warehouse")
    superuser.close()
    target = psycopg2.connect(service.url.rsplit("/", 1)[0] + "/warehouse")
    target.autocommit = True
    with target.cursor() as cur:
        # The least-privileged portal role of docs/security.md: it creates and drops the roles it
        # manages and grants what it holds with GRANT OPTION; it owns nothing and is no superuser.
        cur.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER CREATEROLE PASSWORD %s").format(sql.Identifier(PORTAL_ROLE)),
            [PORTAL_PASSWORD],
        )
        cur.execute("CREATE SCHEMA finance")
        cur.execute("CREATE TABLE finance.ledger (id int PRIMARY KEY, account text, amount numeric)")
        cur.execute("INSERT INTO finance.ledger VALUES (1, '4000', 12.5)")
        cur.execute(sql.SQL("GRANT CONNECT ON DATABASE warehouse TO {}").format(sql.Identifier(PORTAL_ROLE)))
        cur.execute(
            sql.SQL("GRANT USAGE ON SCHEMA finance TO {} WITH GRANT OPTION").format(sql.Identifier(PORTAL_ROLE))
        )
        cur.execute(
            sql.SQL(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA finance TO {} WITH GRANT OPTION"
            ).format(sql.Identifier(PORTAL_ROLE))
        )
    yield {"port": int(service.url.rsplit(":", 1)[1].split("/")[0]), "ca": ca_pem.decode(), "admin": target}
    target.close()
    from governance.provisioners import postgres as pg

    pg.POOL.close_all()
    supervisor.stop_all()


def _source(tls_server: dict[str, Any], owner: Any, classifications: Any, ca: str) -> DataSource:
    source = DataSource.objects.create(
        name=f"tls_{secrets.token_hex(3)}",
        host="127.0.0.1",
        port=tls_server["port"],
        database="warehouse",
        username=PORTAL_ROLE,
        sslmode="verify-full",
        ssl_root_cert=ca,
        role_prefix=f"gtls{secrets.token_hex(2)}_",
        owner=owner,
        default_classification=classifications["confidential"],
    )
    DataSource.objects.filter(pk=source.pk).update(password_encrypted=crypto.encrypt(PORTAL_PASSWORD))
    source.refresh_from_db()
    return source


def _run_jobs(grant: Grant) -> None:
    for job in ProvisioningJob.objects.filter(grant=grant, status=JobStatus.QUEUED):
        provisioning_job_run(job_id=job.pk)


def _can_select(admin: Any, role: str) -> bool:
    with admin.cursor() as cur:
        try:
            cur.execute("BEGIN")
            cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            cur.execute("SELECT amount FROM finance.ledger")
            return True
        except psycopg2.errors.InsufficientPrivilege:
            return False
        finally:
            cur.execute("ROLLBACK")


def test_provisioning_over_verified_tls_as_a_non_superuser(
    tls_server: dict[str, Any], owner: Any, analyst: Any, classifications: Any
) -> None:
    source = _source(tls_server, owner, classifications, tls_server["ca"])
    datasource_sync(source=source)
    ledger = Dataset.objects.get(source=source, schema="finance", name="ledger")
    req = access_request_submit(requester=analyst, dataset=ledger, justification="close", duration=dt.timedelta(days=2))
    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)
    _run_jobs(grant)
    grant.refresh_from_db()
    assert grant.status == GrantStatus.ACTIVE, ProvisioningJob.objects.filter(grant=grant).values_list("last_error")
    role = grant_principal(grant).db_role
    assert _can_select(tls_server["admin"], role)
    with tls_server["admin"].cursor() as cur:
        # Every session of the portal's role is encrypted, and the role really is no superuser.
        cur.execute(
            "SELECT bool_and(s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
            "WHERE a.usename = %s",
            [PORTAL_ROLE],
        )
        all_ssl, sessions = cur.fetchone()
        cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [PORTAL_ROLE])
        assert cur.fetchone()[0] is False
    assert sessions >= 1 and all_ssl is True

    from governance.services.grants import grant_revoke

    grant_revoke(grant=grant, actor=owner, reason="done")
    for job in ProvisioningJob.objects.filter(grant=grant, status=JobStatus.QUEUED):
        provisioning_job_run(job_id=job.pk)
    assert not _can_select(tls_server["admin"], role)


def test_a_server_certificate_from_another_ca_is_refused(
    tls_server: dict[str, Any], owner: Any, classifications: Any, tmp_path: Path
) -> None:
    other_ca, _, _ = _ca_and_server(tmp_path)
    source = _source(tls_server, owner, classifications, other_ca.decode())
    with pytest.raises(Exception, match="certificate verify failed"):
        datasource_sync(source=source)
    source.refresh_from_db()
    assert "certificate verify failed" in source.last_sync_error
    assert PORTAL_PASSWORD not in source.last_sync_error
