"""The portal's own login on a PostgreSQL target (no Django here): a new password, set by the role
itself, and a check that it logs in.

A role may change its own password without any privilege (PostgreSQL allows ``ALTER ROLE`` of the
current user's password to every role), so rotation needs nothing beyond the least-privileged
portal role of docs/security.md. The password is sent as a SCRAM-SHA-256 verifier computed here
(:mod:`governance.provisioners.scram`): the plaintext never reaches the server, its statement log
or ``pg_stat_statements``.
"""

from __future__ import annotations

import secrets
from contextlib import suppress
from dataclasses import replace

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from .errors import PermanentError, ProvisioningError
from .postgres import Target, connect
from .postgres.classify import classify_error
from .scram import scram_sha256_verifier

PASSWORD_BYTES = 30  # 40 URL-safe characters: printable ASCII, as the verifier needs


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def check_password(password: str) -> None:
    """Raise PermanentError when `password` cannot be sent as a verifier (the portal would then be
    unable to put it back after a failed rotation)."""
    try:
        scram_sha256_verifier(password, iterations=1)
    except ValueError:
        raise PermanentError(
            "The current password is not printable ASCII: the portal cannot restore it by verifier, so it"
            " will not rotate it. Set a new password by hand once."
        ) from None


def open_session(target: Target) -> PgConnection:
    """A fresh autocommit session as the portal's role (never a pooled one): the rotation keeps it
    open until the new password is safely stored, to put the old one back if anything fails."""
    conn = connect(target)
    conn.autocommit = True
    return conn


def set_own_password(conn: PgConnection, user: str, password: str, *, secret_values: tuple[str, ...] = ()) -> None:
    """``ALTER ROLE <user> PASSWORD '<SCRAM verifier>'`` on `conn`, whose session user is `user`."""
    verifier = scram_sha256_verifier(password)
    statement = sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(user), sql.Literal(verifier))
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    except psycopg2.Error as exc:
        raise classify_error(exc, secret_values=(password, verifier, *secret_values)) from None


def logs_in(target: Target, password: str) -> None:
    """A new connection with `password` and ``SELECT current_user``; raises the classified error."""
    conn = connect(replace(target, password=password))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user")
            row = cur.fetchone()
        if not row or row[0] != target.user:
            raise PermanentError(f"The new login is {row[0] if row else None!r}, not {target.user!r}.")
    except psycopg2.Error as exc:
        raise classify_error(exc, secret_values=(password,)) from None
    finally:
        with suppress(psycopg2.Error):
            conn.close()


def close(conn: PgConnection | None) -> None:
    if conn is not None:
        with suppress(psycopg2.Error):
            conn.close()


__all__ = [
    "PermanentError",
    "ProvisioningError",
    "check_password",
    "close",
    "logs_in",
    "new_password",
    "open_session",
    "set_own_password",
]
