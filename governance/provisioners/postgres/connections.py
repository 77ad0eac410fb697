"""Connections to targets: connect, probe, and the per-process pool."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2.extensions import connection as PgConnection

from ..errors import ProvisioningError
from .classify import (
    classify_error,
)
from .values import (
    APPLICATION_NAME,
    DEFAULT_LOCK_TIMEOUT_MS,
    DEFAULT_STATEMENT_TIMEOUT_MS,
    IDLE_IN_TRANSACTION_TIMEOUT_MS,
    Target,
)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Connections
# ---------------------------------------------------------------------------------------------


def connect(target: Target) -> PgConnection:
    """A new connection to ``target`` (autocommit off), with session-wide safety timeouts."""
    params: dict[str, Any] = {
        "dbname": target.dbname,
        "sslmode": target.sslmode,
        "connect_timeout": target.connect_timeout,
        "application_name": APPLICATION_NAME,
        # A target that vanishes from the network (no RST: a partition, a dead host) would leave a
        # query waiting on the socket for the kernel's retransmission timeout (~15 min); the
        # statement_timeout is enforced by the server and cannot help then. TCP keepalives and
        # tcp_user_timeout make libpq give up in about 15 s, as a lost connection.
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": 15_000,
        "options": (
            f"-c statement_timeout={DEFAULT_STATEMENT_TIMEOUT_MS}"
            f" -c lock_timeout={DEFAULT_LOCK_TIMEOUT_MS}"
            f" -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}"
        ),
    }
    for key, value in (
        ("host", target.host),
        ("port", target.port),
        ("user", target.user),
        ("password", target.password),
        ("sslrootcert", target.sslrootcert),
    ):
        if value:
            params[key] = value
    try:
        conn = psycopg2.connect(**params)
    except psycopg2.Error as exc:
        raise classify_error(exc, secret_values=target.secret_values, connecting_to=str(target)) from None
    conn.autocommit = False
    return conn


def probe(target: Target) -> None:
    """Whether the target answers: a new connection (``target.connect_timeout``) and ``SELECT 1``,
    closed again; never a pooled connection, whose state says nothing about the server now.

    Raises the classified error when it does not answer (``unreachable``). An error the server
    answered with (wrong password, "too many connections", permission denied) returns normally:
    the server is there, and the jobs that run next report their own error.
    """
    try:
        conn = connect(target)
    except ProvisioningError as exc:
        if exc.unreachable:
            raise
        return
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    except psycopg2.Error as exc:
        error = classify_error(exc, secret_values=target.secret_values)
        if error.unreachable:
            raise error from None
    finally:
        with suppress(psycopg2.Error):
            conn.close()


@dataclass
class _Idle:
    conn: PgConnection
    since: float
    secret_tag: bytes
    pid: int
    suspect: bool = False


class ConnectionPool:
    """Connections to targets, kept open and reused across jobs (a new one costs ~5 ms, as much as
    the whole grant). One per process (``POOL``), keyed by :attr:`Target.key`; thread-safe.

    Two ways to use it:

    * ``conn = POOL.get(target)``: the calling thread's own connection to ``target``, kept in the pool
      between jobs (a Celery prefork worker has one thread: one connection per target per process).
      After a connection error, ``POOL.discard(target)``; nothing to give back otherwise.
    * ``with POOL.connection(target) as conn:``: lend an idle connection for one job; returned
      afterwards, or closed when the job's error says the connection broke.

    Checks stay cheap: ``conn.closed`` always; a ``SELECT 1`` round trip only when the connection
    has been idle longer than ``check_idle_after_s`` or its last lent use ended in an error.
    Connections inherited across ``fork()`` are never used (nor closed: closing would end the parent's
    session). A changed password for the same key retires the old connections.
    """

    def __init__(self, *, max_idle_per_target: int = 4, check_idle_after_s: float = 30.0) -> None:
        self.max_idle_per_target = max_idle_per_target
        self.check_idle_after_s = check_idle_after_s
        self._idle: dict[str, list[_Idle]] = {}
        self._lock = threading.Lock()
        self._tag_key = secrets.token_bytes(32)
        self._inherited: list[PgConnection] = []
        # (thread ident, target key) -> the thread's own connection, for get().
        self._pinned: dict[tuple[int, str], _Idle] = {}
        self._retired: set[str] = set()  # keys of logins that are gone (see retire())
        self.opened = 0
        self.reused = 0

    def _secret_tag(self, target: Target) -> bytes:
        # An HMAC with a per-process random key: compares logins (user and password) without
        # keeping the password around. A new login, not only a new password, retires a connection.
        login = f"{target.user}\0{target.password}".encode()
        return hmac.new(self._tag_key, login, hashlib.sha256).digest()

    def retire(self, key: str) -> None:
        """No connection to ``key`` (a :attr:`Target.key`) is used again: idle ones and the calling
        thread's :meth:`get` one are closed now, another thread's when it next calls :meth:`get`
        (it may be using it now). For a login going away (a Vault lease replaced by a new one)."""
        with self._lock:
            self._retired.add(key)
            entries = self._idle.pop(key, [])
        self._close_retired_pinned()
        for entry in entries:
            if entry.pid == os.getpid():
                self._close(entry.conn)

    def _close_retired_pinned(self) -> None:
        me = threading.get_ident()
        with self._lock:
            if not self._retired:
                return
            slots = [slot for slot in self._pinned if slot[0] == me and slot[1] in self._retired]
            entries = [self._pinned.pop(slot) for slot in slots]
        for entry in entries:
            if entry.pid == os.getpid():
                self._close(entry.conn)

    def get(self, target: Target) -> PgConnection:
        """The calling thread's live connection to ``target`` (autocommit off, no open transaction),
        reused across jobs; a new one only when there is none or it is closed, stale or broken."""
        tag = self._secret_tag(target)
        slot = (threading.get_ident(), target.key)
        self._close_retired_pinned()
        with self._lock:
            entry = self._pinned.pop(slot, None)
        if entry is not None:
            usable = entry.pid == os.getpid() and not entry.conn.closed and hmac.compare_digest(entry.secret_tag, tag)
            usable = usable and target.key not in self._retired
            if usable and time.monotonic() - entry.since > self.check_idle_after_s:
                usable = self._healthy(entry.conn)
            if usable and entry.conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                usable = self._healthy(entry.conn)  # a previous job left a transaction open: roll it back
            if usable:
                entry.since = time.monotonic()
                with self._lock:
                    self._pinned[slot] = entry
                    self.reused += 1
                return entry.conn
            if entry.pid != os.getpid():
                self._inherited.append(entry.conn)
            else:
                self._close(entry.conn)
        conn = self.acquire(target)
        with self._lock:
            self._pinned[slot] = _Idle(conn, time.monotonic(), tag, os.getpid())
        return conn

    def acquire(self, target: Target) -> PgConnection:
        """Lend an idle connection to ``target`` (or a new one); give it back with :meth:`release`."""
        tag = self._secret_tag(target)
        while True:
            with self._lock:
                stack = self._idle.get(target.key)
                entry = stack.pop() if stack else None
            if entry is None:
                conn = connect(target)
                with self._lock:
                    self.opened += 1
                return conn
            if entry.pid != os.getpid():
                self._inherited.append(entry.conn)
                continue
            if entry.conn.closed or not hmac.compare_digest(entry.secret_tag, tag):
                self._close(entry.conn)
                continue
            stale = entry.suspect or time.monotonic() - entry.since > self.check_idle_after_s
            if stale and not self._healthy(entry.conn):
                self._close(entry.conn)
                continue
            with self._lock:
                self.reused += 1
            return entry.conn

    @staticmethod
    def _healthy(conn: PgConnection) -> bool:
        try:
            if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                conn.rollback()
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            conn.rollback()
            return True
        except psycopg2.Error:
            return False

    @staticmethod
    def _close(conn: PgConnection) -> None:
        with suppress(psycopg2.Error):
            conn.close()

    def release(self, target: Target, conn: PgConnection, *, suspect: bool = False) -> None:
        """Give ``conn`` back for reuse (an open transaction is rolled back first)."""
        if conn.closed:
            return
        if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            try:
                conn.rollback()
            except psycopg2.Error:
                self._close(conn)
                return
        entry = _Idle(conn, time.monotonic(), self._secret_tag(target), os.getpid(), suspect)
        with self._lock:
            stack = self._idle.setdefault(target.key, [])
            # A connection lent before its login was retired is not kept.
            if target.key not in self._retired and len(stack) < self.max_idle_per_target:
                stack.append(entry)
                return
        self._close(conn)

    def discard(self, target: Target, conn: PgConnection | None = None) -> None:
        """Close ``conn`` (broken); when ``conn`` is None, the calling thread's :meth:`get`
        connection and every idle connection to ``target``."""
        if conn is not None:
            self._close(conn)
            return
        with self._lock:
            entries = self._idle.pop(target.key, [])
            pinned = self._pinned.pop((threading.get_ident(), target.key), None)
        if pinned is not None:
            entries.append(pinned)
        for entry in entries:
            if entry.pid == os.getpid():
                self._close(entry.conn)

    @contextmanager
    def connection(self, target: Target) -> Iterator[PgConnection]:
        """Lend a connection for one job: returned afterwards, or closed if it broke."""
        conn = self.acquire(target)
        try:
            yield conn
        except BaseException as exc:
            lost = conn.closed or isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError)
            lost = lost or (isinstance(exc, ProvisioningError) and exc.connection_lost)
            if lost:
                self.discard(target, conn)
            else:
                self.release(target, conn, suspect=True)
            raise
        self.release(target, conn)

    def close_all(self) -> None:
        """Close every idle and every :meth:`get` connection (worker shutdown, tests)."""
        with self._lock:
            entries = [e for stack in self._idle.values() for e in stack] + list(self._pinned.values())
            self._idle.clear()
            self._pinned.clear()
        for entry in entries:
            if entry.pid == os.getpid():
                self._close(entry.conn)


POOL = ConnectionPool()
