"""Reconciliation, target side: what the source's catalog holds (observe, CONNECT posture)."""

from __future__ import annotations

from collections.abc import Collection
from concurrent.futures import Executor, Future
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


def _target(source: DataSource) -> pg.Target:
    try:
        return provisioning.target_for(source)
    except ImproperlyConfigured as exc:  # the stored credential cannot be decrypted with the keys
        raise ReconcileFailed(f"Cannot read {source.name}: {exc}") from None


def _observe(
    source: DataSource, names: Collection[str], *, packages: bool = False, acls: bool = True, memberships: bool = True
) -> pg.ObservedState:
    """One catalog query (`pg.observe`) about `names`: their direct privileges and owned objects
    (`acls`) and memberships; with `packages`, also every role named with the source's prefix (its
    access packages, managed roles and JIT logins)."""
    target = _target(source)
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


def _observe_acls_meanwhile(source: DataSource, names: Collection[str], executor: Executor) -> Future[pg.ObservedState]:
    """The ACLs and owned objects of every role of the source (its packages, managed roles and JIT
    logins) and of `names`, read on a connection lent by the pool in `executor`'s thread, while the
    calling thread reads the portal side: the two catalog reads run on two servers at once (each
    mostly waits on its database, with the GIL released). No Django inside the thread."""
    target = _target(source)  # in the calling thread: settings and the credential's decryption
    names = sorted(names)

    def read() -> pg.ObservedState:
        try:
            with pg.POOL.connection(target) as conn:  # lent and given back: safe from any thread
                return pg.observe(
                    conn,
                    names,
                    packages=pgp.package_prefix(source.role_prefix),
                    prefix=source.role_prefix,
                    memberships=False,
                )
        except pg.ProvisioningError as exc:
            raise ReconcileFailed(f"Cannot read {source.name}: {exc.message}") from None

    return executor.submit(read)


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
