"""Reconciliation, target side: what the source's catalog holds (observe, CONNECT posture)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

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


def _observe(
    source: DataSource, names: Collection[str], *, packages: bool = False, acls: bool = True, memberships: bool = True
) -> pg.ObservedState:
    """One catalog query (`pg.observe`) about `names`: their direct privileges and owned objects
    (`acls`) and memberships; with `packages`, also every role named with the source's prefix (its
    access packages, managed roles and JIT logins)."""
    try:
        target = provisioning.target_for(source)
    except ImproperlyConfigured as exc:  # the stored credential cannot be decrypted with the keys
        raise ReconcileFailed(f"Cannot read {source.name}: {exc}") from None
    try:
        conn = pg.POOL.get(target)
        return pg.observe(
            conn,
            names,
            packages=pgp.package_prefix(source.role_prefix) if packages else "",
            prefix=source.role_prefix if packages else "",
            acls=acls,
            memberships=memberships,
        )
    except pg.ProvisioningError as exc:
        if exc.connection_lost:
            pg.POOL.discard(target)
        raise ReconcileFailed(f"Cannot read {source.name}: {exc.message}") from None


def _posture(source: DataSource) -> tuple[list[str], dict[str, Any] | None]:
    """The target's CONNECT posture and what the portal's login is (pg.posture: superuser or not,
    read by the compliance posture page); a failure to read it is one more warning, never a failed
    run: the drift was read."""
    target = provisioning.target_for(source)
    try:
        found = pg.posture(pg.POOL.get(target))
    except pg.ProvisioningError as exc:
        if exc.connection_lost:
            pg.POOL.discard(target)
        return [f"CONNECT privileges not read: {exc.message}"], None
    return found.warnings, found.as_dict()


# --------------------------------------------------------------------------------------------
# Diff
# --------------------------------------------------------------------------------------------
