"""The portal's own login on a source, leased from Vault's database secrets engine (`vault-db:`).

A source whose `password_ref` is `vault-db:MOUNT/ROLE` holds no login at all: each process asks
Vault (`GET /v1/MOUNT/creds/ROLE`) for one when it first needs the source, and Vault makes a new
database role for it, valid for the lease's TTL (docs/security.md#vault-dynamic-credentials-for-the-portal).

Per process and per source there is one current lease, kept in memory only: the username and the
password never enter the portal's database, audit, job records or logs. The shape, and why:

- **At use** (:func:`login`, from `provisioning.target_for` and the catalog sync): the current
  lease if more than a third of its TTL is left; else it is renewed first; a renewal Vault refuses
  (the lease was revoked, or expired), or one that the role's max TTL cut short, means a new lease.
- **In the background**: a daemon thread per process (started with the first lease, again after a
  fork) renews every live lease of *this* process every `VAULT_DB_RENEW_INTERVAL_SECONDS`, so a
  long job's login does not expire under it. A beat task could not: it runs in one worker process
  and the leases live in each process's memory.
- **A new lease retires the old login's pooled connections** (`ConnectionPool.retire`); the old
  lease is not revoked, jobs still using it finish, and Vault drops it at its TTL. Nothing is
  revoked at shutdown either: Vault expires what the process leaves.
- **Vault down**: the current lease is used until its TTL; without one the use fails, naming the
  source and Vault's error (never a password).

When a process takes a new lease it notes the time on the source (`credential_changed_at`): the
posture shows it as the age of the newest lease. Its only write, an observation like a sync's
`last_synced_at` (no audit event, no secret); the HTTP calls are all in this module, through hvac.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import vault
from .models import DataSource
from .provisioners import postgres as pg
from .secrets import SecretUnavailable, dynamic_role, source_password

log = logging.getLogger(__name__)

clock = time.monotonic  # the tests' seam to move time on without sleeping
UNREACHABLE_QUIET_SECONDS = 10.0


@dataclass
class Lease:
    source_id: int
    source: str  # the source's name, for messages
    ref: str
    lease_id: str
    username: str = field(repr=False)
    password: str = field(repr=False)
    ttl: float = 0.0  # the duration Vault gave when it issued the lease
    expires: float = 0.0  # clock() when it runs out
    renewable: bool = True
    quiet_until: float = 0.0  # clock() before which a renewal is not tried again (Vault unreachable)
    keys: set[str] = field(default_factory=set, repr=False)  # Target.keys this login connected as

    def left(self) -> float:
        return self.expires - clock()


_leases: dict[int, Lease] = {}
_lock = threading.RLock()
_renewer: tuple[int, threading.Event] | None = None  # (pid, the event that stops its thread)


def source_login(source: Any) -> tuple[str, str]:
    """(username, password) the portal connects to `source` with: a leased login for a
    `vault-db:` source, else the source's username and its password (stored or referenced)."""
    if dynamic_role(getattr(source, "password_ref", "") or ""):
        lease = login(source)
        return lease.username, lease.password
    return source.username, source_password(source)


def remember_key(source: Any, key: str) -> None:
    """The pool key a leased login was used under, so that replacing the lease retires it."""
    with _lock:
        lease = _leases.get(source.pk)
        if lease is not None and key.startswith(f"{lease.username}@"):
            lease.keys.add(key)


def login(source: Any) -> Lease:
    """This process's current lease for `source`, renewed or replaced as the module says."""
    ref = source.password_ref
    _start_renewer()  # after a fork too: the child renews its own leases
    with _lock:
        lease = _leases.get(source.pk)
        if lease is not None and lease.ref != ref:
            _forget(lease)
            lease = None
        if lease is not None and (lease.left() > lease.ttl / 3 or (lease.left() > 0 and clock() < lease.quiet_until)):
            return lease
        if lease is not None and lease.left() > 0 and lease.renewable and _renew(lease):
            return lease
        try:
            fresh = _generate(source, ref)
        except SecretUnavailable:
            if lease is None or lease.left() <= 0:
                raise
            # Vault gives no new login: the current one works until its TTL (docs/security.md).
            log.warning("No new lease for %s's login; the current one is used until its TTL", lease.source)
            lease.quiet_until = clock() + UNREACHABLE_QUIET_SECONDS
            return lease
        if lease is not None:
            _forget(lease)
        _leases[source.pk] = fresh
    _observe(source.pk)
    return fresh


def _observe(source_id: int) -> None:
    """Note on the source when a lease was taken, for the posture (no secret in it). Skipped when
    another session holds the row: an observation must never make a job wait."""
    with transaction.atomic():
        row = DataSource.objects.select_for_update(skip_locked=True, no_key=True).filter(pk=source_id)
        if row.exists():
            row.update(credential_changed_at=timezone.now())


def _client(ref: str) -> Any:
    if not vault.configured():
        raise SecretUnavailable(f"{ref} needs VAULT_ADDR and VAULT_TOKEN in the portal's settings.")
    return vault.client()


def _generate(source: Any, ref: str) -> Lease:
    import requests
    from hvac import exceptions

    mount, role = dynamic_role(ref) or ("", "")
    try:
        answer = _client(ref).secrets.database.generate_credentials(name=role, mount_point=mount)
        data = answer["data"]
        lease = Lease(
            source_id=source.pk,
            source=source.name,
            ref=ref,
            lease_id=str(answer["lease_id"]),
            username=str(data["username"]),
            password=str(data["password"]),
            ttl=float(answer["lease_duration"]),
            renewable=bool(answer.get("renewable")),
        )
    except exceptions.VaultError as exc:
        raise SecretUnavailable(f"Vault refused a login for {source.name} ({ref}): {vault.errors_of(exc)}.") from None
    except requests.RequestException as exc:
        raise SecretUnavailable(
            f"Vault could not be reached for a login for {source.name} ({ref}): {type(exc).__name__}."
        ) from None
    except (KeyError, TypeError, ValueError):
        raise SecretUnavailable(f"Vault's answer for {source.name} ({ref}) is not a database login.") from None
    lease.expires = clock() + lease.ttl
    log.info("Leased a new login for %s from Vault (%s, TTL %ss)", source.name, ref, int(lease.ttl))
    return lease


def _renew(lease: Lease) -> bool:
    """Renew `lease` in place. False when it must be replaced: Vault refused (revoked, expired) or
    the max TTL cut it below a third of its TTL. Vault unreachable: True while time is left."""
    import requests
    from hvac import exceptions

    try:
        answer = _client(lease.ref).sys.renew_lease(lease_id=lease.lease_id)
        granted = float(answer["lease_duration"])
    except exceptions.VaultError as exc:
        log.warning("Vault refused to renew the lease of %s's login: %s", lease.source, vault.errors_of(exc))
        return False
    except (requests.RequestException, SecretUnavailable) as exc:
        why = str(exc) if isinstance(exc, SecretUnavailable) else type(exc).__name__
        log.warning("Vault could not renew the lease of %s's login (%s); it is used until its TTL", lease.source, why)
        # Not again at every use for a while: each attempt waits for Vault's timeout.
        lease.quiet_until = clock() + UNREACHABLE_QUIET_SECONDS
        return lease.left() > 0
    except (KeyError, TypeError, ValueError):
        return False
    lease.expires = clock() + granted
    return granted > lease.ttl / 3


def _forget(lease: Lease) -> None:
    """Drop `lease` from this process; its pooled connections are closed or not reused again."""
    if _leases.get(lease.source_id) is lease:
        del _leases[lease.source_id]
    for key in lease.keys:
        pg.POOL.retire(key)


def login_refused(source: Any, exc: BaseException) -> bool:
    """Whether `exc` is the target refusing `source`'s leased login (its lease was revoked in Vault
    before its TTL, or Vault dropped the role): the lease is forgotten, the next use takes a new one."""
    # psycopg2 has no SQLSTATE for a refused connection: the server's message says it.
    refused = isinstance(exc, pg.ProvisioningError) and exc.connection_lost and "authentication failed" in str(exc)
    if not refused or not dynamic_role(getattr(source, "password_ref", "") or ""):
        return False
    with _lock:
        lease = _leases.get(source.pk)
        if lease is not None:
            log.warning("The target refused %s's leased login; a new lease is taken next", lease.source)
            _forget(lease)
    return True


def renew_live() -> dict[str, int]:
    """Renew every live lease of this process that has used a third of its TTL (the background
    thread's work; tests call it directly). A lease Vault refuses to renew is dropped: the next use
    takes a new one."""
    counts = {"renewed": 0, "dropped": 0}
    with _lock:
        for lease in list(_leases.values()):
            if lease.left() > lease.ttl * 2 / 3:
                continue
            if lease.renewable and _renew(lease):
                counts["renewed"] += 1
            else:
                _forget(lease)
                counts["dropped"] += 1
    return counts


def current(source_id: int) -> Lease | None:
    """This process's lease for a source, if it holds one (for messages: TTL, age)."""
    with _lock:
        return _leases.get(source_id)


def _start_renewer() -> None:
    global _renewer
    interval = float(getattr(settings, "VAULT_DB_RENEW_INTERVAL_SECONDS", 60))
    if interval <= 0:
        return
    with _lock:
        if _renewer is not None and _renewer[0] == os.getpid():
            return
        stop = threading.Event()
        thread = threading.Thread(target=_renew_forever, args=(interval, stop), name="vault-lease-renewer", daemon=True)
        _renewer = (os.getpid(), stop)
    thread.start()


def _renew_forever(interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        try:
            renew_live()
        except Exception:  # the thread must outlive one bad round
            log.exception("Renewing Vault leases failed")


def reset() -> None:
    """Forget every lease of this process and stop its renewing thread (tests)."""
    global _renewer
    with _lock:
        for lease in list(_leases.values()):
            _forget(lease)
        if _renewer is not None:
            _renewer[1].set()
            _renewer = None
