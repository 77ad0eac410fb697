"""How a psycopg2 error becomes the engine's TransientError or PermanentError (one line, no secret)."""

from __future__ import annotations

import logging
from collections.abc import Collection

import psycopg2
import psycopg2.extensions

from ..errors import PermanentError, ProvisioningError, TransientError
from .values import (
    REDACTED,
)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


# ProvisioningError, TransientError and PermanentError are shared by both adapters: see errors.py.


_TRANSIENT_SQLSTATES: dict[str, str] = {
    "55P03": "lock timeout",
    "40001": "serialization failure",
    "40P01": "deadlock detected",
    "57014": "statement timeout or cancelled",
    "57P01": "server shutting down",
    "57P02": "server crashed",
    "57P03": "server not accepting connections yet",
    "53000": "server out of resources",
    "53100": "server disk full",
    "53200": "server out of memory",
    "53300": "too many connections",
    "53400": "server configuration limit exceeded",
    "58030": "server I/O error",
}
_PERMANENT_LABELS: dict[str, str] = {
    "42P01": "table does not exist",
    "42703": "column does not exist",
    "42501": "permission denied",
    "3F000": "schema does not exist",
    "42704": "role or object does not exist",
    "2BP01": "dependent objects or privileges exist",
    "42601": "syntax not supported by this server",
    "22023": "invalid parameter",
    "57P04": "database dropped",
}
# Connection failures PostgreSQL reports before any SQLSTATE exists (libpq text, English servers).
# Everything else at connect time is treated as transient: a target that is down comes back.
_PERMANENT_CONNECT_HINTS = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "role is not permitted to log in",
    "invalid sslmode",
    "certificate verify failed",
)
# A server that refuses a connection because it is full answers; it is not down.
_CAPACITY_HINTS = ("too many clients", "too many connections", "remaining connection slots")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _scrub(text: str, secret_values: Collection[str]) -> str:
    for value in secret_values:
        if value:
            text = text.replace(value, REDACTED)
    return text


def classify_error(
    exc: BaseException,
    *,
    secret_values: Collection[str] = (),
    statement: str | None = None,
    connecting_to: str | None = None,
) -> ProvisioningError:
    """Map a psycopg2 exception to a TransientError or PermanentError with a one-line message.

    The message uses the server's primary message only (never psycopg2's ``LINE 1: ...`` context,
    which quotes the statement) and is scrubbed of every secret value of the plan.
    """
    if isinstance(exc, ProvisioningError):
        return exc
    sqlstate: str | None = getattr(exc, "pgcode", None)
    diag = getattr(exc, "diag", None)
    primary = (getattr(diag, "message_primary", None) if diag is not None else None) or ""
    if not primary:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        primary = lines[0] if lines else type(exc).__name__
    primary = _one_line(primary).removeprefix("ERROR: ").strip()
    where = f"; statement: {_one_line(statement)}" if statement else ""

    error: ProvisioningError
    if connecting_to is not None:
        text = f"cannot connect to {connecting_to}: {primary}"
        if any(hint in primary for hint in _PERMANENT_CONNECT_HINTS):
            error = PermanentError(text, sqlstate=sqlstate, connection_lost=True)
        else:
            # The server answered "too many connections": it is up, only full. Ordinary backoff.
            full = (sqlstate or "").startswith("53") or any(hint in primary for hint in _CAPACITY_HINTS)
            error = TransientError(text, sqlstate=sqlstate, connection_lost=True, unreachable=not full)
    elif sqlstate is None and isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
        error = TransientError(f"connection to target lost: {primary}{where}", connection_lost=True, unreachable=True)
    elif sqlstate is not None and (sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith("08")):
        label = _TRANSIENT_SQLSTATES.get(sqlstate, "connection failure")
        lost = sqlstate.startswith(("08", "57P"))
        error = TransientError(
            f"{label}: {primary} [SQLSTATE {sqlstate}]{where}",
            sqlstate=sqlstate,
            connection_lost=lost,
            unreachable=lost,
        )
    elif sqlstate == "XX000" and "tuple concurrently updated" in primary:
        # Two sessions rewrote the same catalog row (an ACL, a role). Retrying sees the winner's row.
        error = TransientError(f"concurrent catalog update: {primary} [SQLSTATE XX000]{where}", sqlstate=sqlstate)
    elif sqlstate == "23505" and (getattr(diag, "constraint_name", None) or "").startswith("pg_"):
        # A concurrent CREATE ROLE / GRANT role on the same cluster inserted the same catalog row.
        error = TransientError(f"concurrent catalog insert: {primary} [SQLSTATE 23505]{where}", sqlstate=sqlstate)
    else:
        label = _PERMANENT_LABELS.get(sqlstate or "", "target refused the statement")
        code = f" [SQLSTATE {sqlstate}]" if sqlstate else ""
        error = PermanentError(f"{label}: {primary}{code}{where}", sqlstate=sqlstate)
    error.message = _scrub(error.message, secret_values)
    error.args = (error.message,)
    return error
