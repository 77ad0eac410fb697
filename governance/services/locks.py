"""Portal-side advisory locks that serialise work on one target object (a table, or a grantee's
source policy on AWS) across workers and machines: provisioning jobs, batches, JIT steps and the
reconciler's repairs all take the same lock for the same key."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from django.db import connection


def object_lock_id(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


@contextmanager
def object_lock(key: str) -> Iterator[None]:
    """Session-level advisory lock on the portal database (held across the target call, outside
    any transaction), released in all cases. Serialises all work on one target object (jobs,
    JIT steps, reconciler repairs) across workers."""
    with object_locks([key]):
        yield


@contextmanager
def object_locks(keys: Iterable[str]) -> Iterator[None]:
    """Several object locks (a batch), taken in ascending key order in one round trip: a batch and
    a single job, or two batches, never wait on each other in a cycle."""
    ids = sorted({object_lock_id(key) for key in keys})
    try:
        with connection.cursor() as cur:
            # The ORDER BY in a subquery that cannot be flattened (OFFSET 0): the locks are taken
            # row by row in that order.
            cur.execute(
                "SELECT count(pg_advisory_lock(k))"
                " FROM (SELECT k FROM unnest(%s::bigint[]) AS k ORDER BY k OFFSET 0) s",
                [ids],
            )
        yield
    finally:
        # Also when taking them failed part-way or a time limit fired right after: session locks
        # outlive errors, and one left held would block every later job on its table. Unlocking a
        # lock not held only returns false.
        with connection.cursor() as cur:
            cur.execute("SELECT count(pg_advisory_unlock(k)) FROM unnest(%s::bigint[]) AS k", [ids])
