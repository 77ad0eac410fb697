"""Last-used facts: take a reading of each source's use and record, per grant, when it was last used.

The reading (the backend's `read_usage`: pg_stat_statements on PostgreSQL, IAM's
service-last-accessed data on AWS) happens outside any portal transaction; what it found is
recorded in one. Observations are not decisions: a reading that changes nothing writes nothing,
and the audit trail gets one `usage.snapshot` event per reading that saw new use or changed what
the source can tell (never one per grant). Displayed through governance/selectors/usage.py;
docs/usage.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Q

from audit import services as audit

from ..backends import KINDS, UsageRead, backend_for
from ..errors import DomainError
from ..models import DataSource, Grant, GrantUsage, SourcePrincipal, SourceUsage
from ..provisioners.errors import ProvisioningError

log = logging.getLogger(__name__)


class UsageReadFailed(DomainError):
    """The source did not answer, or failed otherwise, while its use was read (nothing recorded)."""

    code = "usage_read_failed"
    status = 502


@dataclass(frozen=True)
class SnapshotResult:
    can_tell: bool
    reason: str
    grants_used: int

    def as_dict(self) -> dict[str, Any]:
        return {"can_tell": self.can_tell, "reason": self.reason, "grants_used": self.grants_used}


def usage_snapshot_take(*, source: DataSource) -> SnapshotResult:
    """Read `source`'s use and record it: the source's state (can it tell, since when) and each
    grant in force whose use was seen. Raises UsageReadFailed when the source does not answer
    (nothing is recorded then: the next reading compares with the last good one)."""
    principals = {
        p.db_role: p for p in SourcePrincipal.objects.filter(source=source).only("db_role", "user_id", "role_id")
    }
    previous = SourceUsage.objects.filter(source=source).first()
    counters = previous.counters if previous is not None and previous.can_tell else None
    try:
        read = backend_for(source).read_usage(
            source,
            principals=sorted(principals),
            previous=counters,
            previous_reset=previous.stats_reset if previous is not None else None,
        )
    except ProvisioningError as exc:
        raise UsageReadFailed(exc.message) from exc
    with transaction.atomic():
        state = SourceUsage.objects.select_for_update().filter(source=source).first() or SourceUsage(source=source)
        before = (state.can_tell, state.reason, state.stats_reset)
        _apply_reading(state, read, had_counters=counters is not None)
        state.save()
        used = _record_uses(source, principals, read)
        # What it can tell, or a reset of its counters (observation restarts); not AWS's moving window.
        changed = before != (state.can_tell, state.reason, state.stats_reset)
        if changed or used:
            audit.record(
                action="usage.snapshot",
                target=source,
                reason=state.reason,
                changes={"can_tell": [before[0], state.can_tell]} if before[0] != state.can_tell else None,
                metadata={
                    "grants_used": used,
                    "observed_since": state.observed_since.isoformat() if state.observed_since else None,
                    "stats_reset": state.stats_reset.isoformat() if state.stats_reset else None,
                    "unparsed_statements": read.unparsed,
                },
            )
    return SnapshotResult(can_tell=state.can_tell, reason=state.reason, grants_used=used)


def _apply_reading(state: SourceUsage, read: UsageRead, *, had_counters: bool) -> None:
    """Move the source's state to what `read` says; `observed_since` is where unbroken
    observation begins (SourceUsage's docstring)."""
    if not read.can_tell:
        state.can_tell, state.reason, state.counters = False, read.reason, {}
        state.observed_since = None
        return
    reset_since = (
        read.stats_reset is not None and state.stats_reset is not None and read.stats_reset != state.stats_reset
    )
    if read.observed_since is not None:
        state.observed_since = read.observed_since
    elif not had_counters or state.observed_since is None:
        state.observed_since = read.read_at  # the baseline: counts before it have no time
    elif reset_since:
        # Use between the previous reading and the reset was lost with the counters.
        state.observed_since = max(state.observed_since, read.stats_reset)  # type: ignore[type-var]
    state.can_tell, state.reason = True, ""
    state.last_read_at, state.stats_reset, state.counters = read.read_at, read.stats_reset, read.counters


def _record_uses(source: DataSource, principals: dict[str, SourcePrincipal], read: UsageRead) -> int:
    """Each use to the grants in force it stands for: the principal's own grants (a person's, or a
    portal Role's) on that dataset of the source (any dataset, for a use without one)."""
    wanted: dict[tuple[str, int], list[tuple[tuple[str, str] | None, Any, str]]] = {}
    for use in read.uses:
        principal = principals.get(use.principal)
        if principal is None:
            continue
        key = ("user", principal.user_id) if principal.user_id else ("role", principal.role_id)
        wanted.setdefault(key, []).append((use.dataset, use.at, use.seen_as))  # type: ignore[arg-type]
    if not wanted:
        return 0
    who = Q()
    for kind, pk in wanted:
        who |= Q(grantee_user_id=pk) if kind == "user" else Q(grantee_role_id=pk)
    latest: dict[int, tuple[Any, str]] = {}
    grants = Grant.objects.active().filter(who, dataset__source=source)
    for grant_id, user_id, role_id, schema, name in grants.values_list(
        "id", "grantee_user_id", "grantee_role_id", "dataset__schema", "dataset__name"
    ):
        key = ("user", user_id) if user_id else ("role", role_id)
        for dataset, at, seen_as in wanted.get(key, ()):
            if dataset is not None and dataset != (schema, name):
                continue
            if grant_id not in latest or at > latest[grant_id][0]:
                latest[grant_id] = (at, seen_as)
    existing = dict(GrantUsage.objects.filter(grant_id__in=latest).values_list("grant_id", "last_used_at"))
    rows = [
        GrantUsage(grant_id=grant_id, last_used_at=at, used_as=seen_as)
        for grant_id, (at, seen_as) in latest.items()
        if existing.get(grant_id) is None or at > existing[grant_id]
    ]
    GrantUsage.objects.bulk_create(
        rows, update_conflicts=True, unique_fields=["grant"], update_fields=["last_used_at", "used_as"]
    )
    return len(rows)


def usage_snapshot_all() -> dict[str, dict[str, Any] | str]:
    """Every source the portal provisions (the scheduled run). One source failing does not stop
    the others; a source that does not answer keeps its last state."""
    out: dict[str, dict[str, Any] | str] = {}
    for source in DataSource.objects.filter(kind__in=KINDS, provisioning_enabled=True).order_by("name"):
        try:
            out[source.name] = usage_snapshot_take(source=source).as_dict()
        except UsageReadFailed as exc:
            out[source.name] = exc.message
        except Exception as exc:  # a bug on one source must not hide the others' use
            log.exception("Usage snapshot of %s failed", source.name)
            out[source.name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    return out
