"""Reconciliation: compare what the portal decided with what a PostgreSQL target really holds.

`reconcile_source()` compares, on a PostgreSQL source, (a) each access package role's own ACL with its
definition and (b) for each principal the SET of access packages it is a member of with the set its
grants in force call for; only where these differ (or a principal holds something directly, owns an
object, or is in a package that differs from its definition) are objects compared privilege by
privilege. It records the differences as `DriftFinding` rows and, when asked, repairs them the way a
provisioning job converges a (principal, object): under the same portal advisory lock, in one
target transaction, verified afterwards.

Order of work (house rule 4, no network inside a portal transaction):

1. read the portal side in a fixed number of queries (principals, datasets, the packages the grants
   in force define, their exceptions, ended grants, jobs in flight, memberships), whatever the number
   of grants;
2. observe every package's ACL (one catalog query, in a second thread on a lent connection while
   step 1 and the first chunk of step 3 read the portal: two databases work at once) and diff them
   with their definitions;
3. stream each principal's wanted packages from the portal in chunks of `CHUNK` principals (closed
   early at `CHUNK_MEMBERSHIPS` memberships); per chunk, observe those principals (one catalog
   query) and diff: memory follows the chunk;
4. one portal transaction: lock the source row (two runs of one source write one after the other),
   close open findings no longer observed (`gone`), open the new ones, audit the run;
5. with `fix`: per affected (principal, object), converge and verify on the target, then close its
   findings as `fixed` and audit each, in a short transaction per object.

What counts as desired, and why:

* Grants in force (`Grant.objects.active()`) with status `active` are the desired state.
* A (principal, dataset) with a grant in force still `approved`, or with a provisioning job queued or
  running, is *in flight*: the provisioning engine owns it right now. It is skipped (neither reported
  nor repaired) so that the reconciler never races a job, and never applies a grant the engine has not
  checked against its approved plan digest ("plan changed, re-approval needed").
* Grants in force whose provisioning `failed` are not desired: the engine refused them. Privileges
  they would give show up as `unexpected`.
* A privilege held beyond the desired set is `expired_but_present` when a grant of the same principal
  on the same dataset that has ended (expired, revoked, or past its end) would have given it: the
  revocation did not reach the target. Otherwise it is `unexpected` (an out-of-band GRANT), also on
  tables the portal does not govern at all.
* Mapped existing login roles (`SourcePrincipal.managed = False`) belong to people, not to the
  portal: only their privileges on governed objects (a Dataset row) are compared.
* An object OWNED by a principal is not compared privilege by privilege (an owner holds everything
  implicitly and can grant itself anything back). Ownership by a portal-managed role is reported as an
  `unexpected OWNER` finding that the reconciler cannot repair (a DBA must change the owner);
  ownership by a mapped login role is the person's own business and ignored.
* Schema USAGE is not compared: the engine grants it and never revokes it (another table of the
  schema may still need it), so it carries no drift signal of its own.
* Role memberships are compared too. Desired: each active RoleMembership whose role holds an active
  grant in force on the source, or that a membership job ever converged there, puts the member's
  principal in the role's principal. Any other direct membership of a managed principal (e.g. an
  out-of-band `GRANT pg_read_all_data TO …`, or a portal group after the membership ended) is
  `unexpected`; a mapped login role is only compared on the portal's own group roles. A membership
  with a membership job queued or running is in flight and skipped. JIT login roles are members of
  their grantee's principal by design: their memberships are not compared, the roles themselves are
  (`governance.services.reconcile.jit`: leftover logins, a hand-edited VALID UNTIL). A membership finding
  is stored with privilege `MEMBER`, an empty `object_schema` and the group role in `object_name`.
"""

from __future__ import annotations

import gc
import itertools
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.roles import administers_sources
from audit import services as audit
from audit.models import Outcome

from ... import progress
from ...backends import Converges, backend_for, has_backend
from ...errors import ConflictError, DomainError, NotPermitted
from ...models import (
    DataSource,
    DriftKind,
)
from ...selectors.catalog import provisioned_sources
from ..common import refusal_recorded
from . import jit, views
from .aws import reconcile_aws_source
from .diff import _diff_packages, _diff_principals, _sorted
from .model import (
    Drift,
    PairKey,
    ReconcileFailed,
    ReconcileResult,
)
from .portal import _principal_rows, _read_portal, _wanted
from .record import _record
from .repair import (
    _fix_membership,
    _fix_orphan_package,
    _fix_pair,
)
from .row_policies import reconcile_row_policies
from .target import _observe, _observe_acls_meanwhile, _posture

log = logging.getLogger(__name__)

# Principals compared per chunk (one target query per chunk), and the memberships a chunk may call
# for before it is closed: memory follows the chunk, not the source.
CHUNK = 500
CHUNK_MEMBERSHIPS = 20_000

# The stages a run reports (governance.progress): principals compared, then (people, objects) repaired.
COMPARING = "comparing principals"
REPAIRING = "repairing drift"


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic GC off while a run builds and drops its chunks (restored after).

    A run allocates objects by the hundred thousand, almost none of them in cycles (freed by
    reference counting as each chunk is dropped), and every 700 allocations set off a collection
    that walks the young objects, and now and then the whole heap of the worker: measured at a
    third of a run's wall time (docs/performance.md)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def ensure_may_reconcile(actor: Any, source: DataSource) -> None:
    # actor None is the system: the scheduled task or the management command.
    if actor is not None and not administers_sources(actor):
        raise NotPermitted("Only governance admins can reconcile data sources.")
    # The source's state, not the caller's input, is what stands in the way: a conflict (409).
    if not has_backend(source):
        raise ConflictError(
            f"{source.name} is neither a PostgreSQL nor an AWS source: nothing to reconcile.", state=source.kind
        )
    if not source.provisioning_enabled:
        raise ConflictError(
            f"Provisioning is disabled for {source.name}: the portal manages nothing there.",
            state="provisioning_disabled",
        )


def reconcile_source(*, source: DataSource, fix: bool = False, actor: Any = None) -> ReconcileResult:
    """Diff the target's actual privileges with the grants in force; record findings; repair if `fix`.

    Call it outside `transaction.atomic()` (it reads a remote database and takes session advisory
    locks). Raises NotPermitted / ConflictError (recorded as denied) for a non-admin actor, a source
    that is not PostgreSQL or has provisioning off; ReconcileFailed (recorded as a failed
    `reconcile.run`) when the target cannot be observed. A repair that fails is not an exception: it
    is in `result.errors`, audited as a failed `drift.fix`, and its findings stay open.
    """
    with refusal_recorded(action="reconcile.run", actor=actor, target=source):
        ensure_may_reconcile(actor, source)
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError(
            "reconcile_source() reads a remote database; call it outside transaction.atomic() "
            "so that no portal lock is held while waiting on the network."
        )
    if backend_for(source).converges == Converges.PRINCIPAL_POLICY:
        return reconcile_aws_source(source=source, fix=fix, actor=actor)

    started = time.perf_counter()
    result = ReconcileResult(source=source.name, run_id=uuid.uuid4(), fix=fix)
    now = timezone.now()
    rows = _principal_rows(source)
    # Named with the prefix, a role is read by it; by name only the others (mapped logins).
    prefix = source.role_prefix or "\0"
    known = [row.name for row in rows if not row.name.startswith(prefix)]
    try:
        with _gc_paused(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="reconcile-acls") as executor:
            # The ACLs and owned objects of every role of the source at once (packages, principals):
            # one pass over the target's catalog, in a thread while this one reads the portal side
            # and the first chunk of the stream. Memberships, chunk by chunk below.
            reading = _observe_acls_meanwhile(source, known, executor)
            state = _read_portal(source, now, rows)
            chunks = _wanted(state, source, now, CHUNK, CHUNK_MEMBERSHIPS)
            first = next(chunks, None)
            acls = reading.result()
            covered = set(known)
            found, dirty = _diff_packages(state, acls)
            memberships: list[Drift] = []
            people = sum(1 for name in state.principals if not state.is_package(name))  # people and roles
            compared = 0
            progress.report(compared, people, COMPARING)
            # Principals in chunks: memory holds one chunk's wanted and observed packages at a time.
            for chunk in itertools.chain([first] if first is not None else [], chunks):
                names = [name for name, _ in chunk]
                # A grantee first named by the stream, outside the source's prefix (an empty one),
                # was not in the first pass: this chunk reads its ACLs itself.
                whole = all(name in covered or name.startswith(prefix) for name in names)
                observed = _observe(source, names, acls=not whole)
                privileges, members = _diff_principals(state, chunk, observed, acls if whole else observed, acls, dirty)
                found += privileges
                memberships += members
                compared += len(chunk)
                progress.report(compared, max(people, compared), COMPARING)
        logins = jit.observe(source)
        governed = views.governed_state(source)
        found = [d for d in found if not governed.ignored(d)]
        memberships = [d for d in memberships if not governed.ignored(d)]
        found += views.governed_drift(source, governed)
    except ReconcileFailed as exc:
        audit.record(
            action="reconcile.run",
            actor=actor,
            target=source,
            outcome=Outcome.FAILED,
            reason=exc.message,
            metadata={"run": result.run_id, "code": exc.code, "fix": fix},
        )
        raise
    result.principals = people
    login_drift, logins_in_flight = jit.diff(source, logins, now)
    result.drift = _sorted(found, memberships) + login_drift
    result.posture, result.login = _posture(source)
    result.skipped = sum(1 for name, _ in state.in_flight if not state.is_package(name))
    skipped_pairs = {
        (name, ref.schema, ref.name) for name, ds_id in state.in_flight if (ref := state.dataset_ref.get(ds_id))
    }
    skipped_pairs |= {(member, "", group) for member, group in state.members_in_flight}
    result.skipped += len(state.members_in_flight)
    skipped_pairs |= {(name, "", "") for name in logins_in_flight}
    _record(source, result.drift, skipped_pairs, result, actor, now)
    reconcile_row_policies(source, result, now, fix=fix, actor=actor)

    if fix and result.drift:
        # What the repairs start from: the drifting principals and the packages, observed again.
        observed = _observe(source, sorted({d.principal for d in result.drift}), packages=True)
        by_pair: dict[PairKey, list[Drift]] = defaultdict(list)
        for item in result.drift:
            by_pair[item.pair].append(item)
        for done, pair in enumerate(sorted(by_pair)):
            progress.report(done, len(by_pair), REPAIRING)
            items = by_pair[pair]
            if items[0].kind in jit.KINDS:
                jit.fix(source, items, result, actor)
            elif items[0].kind == DriftKind.VIEW_DIFFERS:
                views.governed_fix(source, items, result, actor)
            elif items[0].kind == DriftKind.ORPHAN_PACKAGE:
                _fix_orphan_package(source, items, result, actor, observed)
            elif items[0].obj is None:
                _fix_membership(source, state, items, result, actor)
            else:
                _fix_pair(source, state.principals[pair[0]], items, result, actor, observed)
        progress.report(len(by_pair), len(by_pair), REPAIRING)
    result.elapsed_ms = (time.perf_counter() - started) * 1000
    return result


def reconcile_sources_all(*, actor: Any = None, fix: bool | None = None) -> dict[str, ReconcileResult | str]:
    """Every provisioning-enabled PostgreSQL and AWS source; one source's failure does not stop the others.

    `fix=None` means each source's own `auto_fix_drift` (the scheduled run). The value per source is
    its result, or the one-line error that stopped it (already audited as a failed run).
    """
    out: dict[str, ReconcileResult | str] = {}
    sources = provisioned_sources()
    for source in sources:
        try:
            out[source.name] = reconcile_source(
                source=source, fix=source.auto_fix_drift if fix is None else fix, actor=actor
            )
        except DomainError as exc:  # already recorded (denied or failed) by reconcile_source
            out[source.name] = exc.message
        except Exception as exc:  # a bug or a lost portal connection on one source
            log.exception("Reconcile of %s failed", source.name)
            message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            try:
                audit.record(action="reconcile.run", actor=actor, target=source, outcome=Outcome.FAILED, reason=message)
            except Exception:  # the portal database itself may be what failed
                log.exception("Could not record the failed reconcile of %s", source.name)
            out[source.name] = message
    return out
