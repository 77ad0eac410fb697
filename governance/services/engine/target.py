"""One target transaction on a pooled PostgreSQL connection, then its verification: how the engine's
steps and the reconciler's repairs apply a plan."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings

from ...provisioners import postgres as pg
from .attempt import verification_failed

T = TypeVar("T")


def apply_and_verify(
    target: pg.Target,
    plan: pg.Plan,
    lock_key: str,
    verify: Callable[[Any], list[str]] | None = None,
    *,
    after_commit: Callable[[Any], pg.Check] | None = None,
) -> pg.ApplyResult:
    """Apply `plan` in one target transaction on a pooled connection, then verify; a verification
    difference is a permanent failure carrying the difference, a lost connection is discarded.
    Used by the engine and by the reconciler's repairs alike. See `apply_then`."""
    result, problems = apply_then(target, plan, lock_key, verify, after_commit=after_commit)
    if problems:
        raise verification_failed(problems)
    return result


def apply_then(
    target: pg.Target,
    plan: pg.Plan,
    lock_key: str,
    check: Callable[[Any], T] | None = None,
    *,
    after_commit: Callable[[Any], pg.Check] | None = None,
) -> tuple[pg.ApplyResult, Any]:
    """Apply `plan` on a pooled connection to `target`, then run `check` on the same connection,
    or `after_commit`'s query in the round trip of the COMMIT (one round trip less: the hot path);
    a connection lost on the way is discarded from the pool."""
    conn = pg.POOL.get(target)
    try:
        result = pg.apply(
            conn,
            plan,
            lock_key=lock_key,
            lock_timeout_ms=settings.TARGET_LOCK_TIMEOUT_MS,
            statement_timeout_ms=settings.TARGET_STATEMENT_TIMEOUT_MS,
            check=after_commit(conn) if after_commit is not None else None,
        )
        return result, (check(conn) if check is not None else result.checked)
    except pg.ProvisioningError as exc:
        if exc.connection_lost:
            pg.POOL.discard(target)
        raise
