"""Reconciliation, target side: what the source's catalog holds (observe, owners, CONNECT posture)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import psycopg2
from django.core.exceptions import ImproperlyConfigured

from ... import provisioning
from ...models import (
    DataSource,
)
from ...provisioners import pg_packages as pgp
from ...provisioners import postgres as pg

# The portal-side advisory lock a provisioning job holds on a target object while it converges it;
# taking the same one means a repair and a job on one object never overlap.
from .model import (
    ReconcileFailed,
)

_OWNERS_SQL = """
SELECT n.nspname::text, c.relname::text, r.rolname::text
FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS o(schema_name, rel_name)
JOIN pg_catalog.pg_namespace n ON n.nspname = o.schema_name
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = o.rel_name
JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
WHERE r.rolname = ANY(%(roles)s::name[])
"""


def _owners(conn: Any, objects: Collection[pg.ObjectRef], roles: Collection[str]) -> dict[pg.ObjectRef, str]:
    """Which of `objects` are owned by one of `roles` (an owner's ACL entry is not a grant)."""
    if not objects or not roles:
        return {}
    ordered = sorted(objects)
    params = {
        "schemas": [o.schema for o in ordered],
        "names": [o.name for o in ordered],
        "roles": sorted(roles),
    }
    try:
        with conn.cursor() as cur:
            cur.execute(_OWNERS_SQL, params)
            rows = cur.fetchall()
    except psycopg2.Error as exc:
        raise pg.classify_error(exc, statement="owners()") from exc
    finally:
        if not conn.closed:
            conn.rollback()  # a pooled connection must not stay idle in transaction
    return {pg.ObjectRef(schema, name): owner for schema, name, owner in rows}


def _observe(source: DataSource, names: Collection[str]) -> tuple[pg.ObservedState, dict[pg.ObjectRef, str]]:
    try:
        target = provisioning.target_for(source)
    except ImproperlyConfigured as exc:  # the stored credential cannot be decrypted with the keys
        raise ReconcileFailed(f"Cannot read {source.name}: {exc}") from None
    try:
        conn = pg.POOL.get(target)
        observed = pg.observe(conn, names, packages=pgp.package_prefix(source.role_prefix))
        held = {obj for objects in observed.privileges.values() for obj in objects}
        owners = _owners(conn, held, names)
    except pg.ProvisioningError as exc:
        if exc.connection_lost:
            pg.POOL.discard(target)
        raise ReconcileFailed(f"Cannot read {source.name}: {exc.message}") from None
    return observed, owners


def _posture(source: DataSource) -> list[str]:
    """The target's CONNECT posture (pg.connect_posture); a failure to read it is one more warning,
    never a failed run: the drift was read."""
    target = provisioning.target_for(source)
    try:
        return pg.connect_posture(pg.POOL.get(target))
    except pg.ProvisioningError as exc:
        if exc.connection_lost:
            pg.POOL.discard(target)
        return [f"CONNECT privileges not read: {exc.message}"]


# --------------------------------------------------------------------------------------------
# Diff
# --------------------------------------------------------------------------------------------
