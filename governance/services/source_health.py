"""Per-source health: jobs wait while their source does not answer, and resume when it does.

Why: with retries and backoff alone, a one-minute outage spent an apply's attempts in seconds
(the grant failed for good) and pushed revocations minutes past the target's return (the backoff
had grown). Instead, the first job that gets no answer from a source marks it unreachable and
parks (status queued, `waiting_since` set, no message in the broker, no attempt spent); later jobs
of that source park as soon as they are claimed, without touching it. The prober probes each
unreachable source every PROVISIONING_PROBE_INTERVAL_SECONDS (connect and `SELECT 1`, or one IAM
call, with a short timeout); the first answer marks the source reachable and publishes its waiting
jobs: revocations first, then membership changes, then applies (in batches). A job that succeeds
on a source marks it reachable too.

Ordering and races: every transition and every park takes the source's SourceHealth row lock, and
a park re-checks the state under it. So a release can never miss a job that was parking at the same
moment: either the park committed first (the release sees the job) or the release did (the park
sees "reachable" and the job runs). The sweeper also releases waiting jobs of a reachable source,
as a safety net. Transitions are audited (`source.unreachable`, `source.recovered`) and logged; the
probes in between are not (they would flood the trail), only counted on the row.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from audit import services as audit
from audit.models import Outcome

from ..backends import backend_for
from ..models import DataSource, JobStatus, ProvisioningJob, SourceHealth
from ..provisioners import postgres as pg
from .publishing import publish_in_order

log = logging.getLogger(__name__)


def known_unreachable(source: DataSource) -> bool:
    """The state loaded with the job (``select_related("...source__health")``): no query."""
    try:
        health = source.health
    except SourceHealth.DoesNotExist:
        return False
    return health is not None and not health.reachable


def _locked(source_id: int) -> tuple[SourceHealth, bool]:
    """The source's health row, created (reachable) when missing, locked until the transaction
    ends; and whether it was just created."""
    return SourceHealth.objects.select_for_update(of=("self",)).get_or_create(source_id=source_id)


def _source_name(source_id: int) -> str:
    return DataSource.objects.filter(pk=source_id).values_list("name", flat=True).first() or f"#{source_id}"


def _mark_unreachable(health: SourceHealth, *, error: str, now: dt.datetime) -> None:
    """Inside a transaction holding the row lock."""
    health.last_error = error[:2000]
    health.last_failure_at = now
    if health.reachable:
        name = _source_name(health.source_id)
        health.reachable = False
        health.since = now
        health.failed_probes = 0
        health.next_probe_at = now  # the prober's next run probes it
        audit.record(
            action="source.unreachable",
            actor=None,
            target_type="governance.datasource",
            target_id=health.source_id,
            target_repr=name,
            outcome=Outcome.FAILED,
            reason=health.last_error,
            metadata={"source": name},
        )
        log.error("Data source %s does not answer; its provisioning jobs wait for it: %s", name, health.last_error)
    health.save()


def jobs_park(
    *, source_id: int, job_ids: Iterable[int], error: str = "", attempted_at: dt.datetime | None = None
) -> bool:
    """Park claimed (running) jobs of a source that does not answer. Returns False, parking
    nothing, when the source answers after all: the caller runs (or retries) the jobs itself.

    Without `error`: the jobs were claimed while the source was known to be unreachable and never
    touched it; their claim's attempt is given back. With `error`: an attempt that began at
    `attempted_at` got no answer; the source is marked unreachable, unless it was seen answering
    after that attempt began (stale news: the caller retries at once).
    """
    ids = list(job_ids)
    now = timezone.now()
    with transaction.atomic():
        health, created = _locked(source_id)
        if error:
            if health.reachable and not created and attempted_at is not None and health.since > attempted_at:
                return False
            _mark_unreachable(health, error=error, now=now)
        elif health.reachable:
            return False
        parked = list(
            ProvisioningJob.objects.filter(pk__in=ids, status=JobStatus.RUNNING).values_list("pk", "action", "attempts")
        )
        ProvisioningJob.objects.filter(pk__in=[pk for pk, _, _ in parked]).update(
            status=JobStatus.QUEUED,
            waiting_since=now,
            lease_expires_at=None,
            next_attempt_at=None,
            last_error=error or health.last_error,
            attempts=F("attempts") - (0 if error else 1),
        )
        audit.record_many(
            [
                audit.build(
                    action="provisioning_job.waiting",
                    actor=None,
                    target_type="governance.provisioningjob",
                    target_id=pk,
                    target_repr=f"{action} job #{pk}",
                    reason=error or health.last_error,
                    metadata={"source": source_id, "action": action, "attempt": attempts if error else attempts - 1},
                )
                for pk, action, attempts in parked
            ]
        )
    return True


def source_recovered(*, source_id: int, via: str) -> int:
    """The source answered (`via`: "probe", "job" or "sweeper"): mark it reachable and release its
    waiting jobs, published once this commits, revocations first. Returns how many were released."""
    now = timezone.now()
    with transaction.atomic():
        health, _ = _locked(source_id)
        was_down = not health.reachable
        outage = health.since
        probes = health.failed_probes
        if was_down:
            health.reachable = True
            health.since = now
            health.next_probe_at = None
            health.save()
        waiting = list(
            ProvisioningJob.objects.select_for_update(of=("self",))
            .filter(waiting_since__isnull=False, status=JobStatus.QUEUED)
            .filter(Q(source_id=source_id) | Q(grant__dataset__source_id=source_id))
            .order_by("pk")
            .values_list("pk", "action", "grant__jit_role")
        )
        if waiting:
            ProvisioningJob.objects.filter(pk__in=[pk for pk, _, _ in waiting]).update(
                waiting_since=None, published_at=now
            )
        if was_down:
            name = _source_name(source_id)
            seconds = round((now - outage).total_seconds(), 1)
            audit.record(
                action="source.recovered",
                actor=None,
                target_type="governance.datasource",
                target_id=source_id,
                target_repr=name,
                reason=f"Answered again after {seconds} s (seen by {via}).",
                metadata={
                    "source": name,
                    "via": via,
                    "unreachable_s": seconds,
                    "failed_probes": probes,
                    "released": len(waiting),
                },
            )
            log.warning(
                "Data source %s answers again after %s s (%s); %s waiting job(s) released",
                name, seconds, via, len(waiting),
            )  # fmt: skip
        rows = [(pk, action, jit_role or "", source_id) for pk, action, jit_role in waiting]
        transaction.on_commit(lambda: publish_in_order(rows))
    return len(waiting)


def _prober(source: DataSource, timeout: float) -> Callable[[], None]:
    """What to run to probe the source (built here, in the caller's thread: it may read the
    source's password from a secret store through the portal)."""
    return backend_for(source).probe(source, timeout=timeout)


_CLAIM_PROBES_SQL = """
UPDATE {table} SET next_probe_at = %s
WHERE NOT reachable AND (next_probe_at IS NULL OR next_probe_at <= %s)
RETURNING source_id
"""


def sources_probe() -> dict[str, str]:
    """Scheduled every PROVISIONING_PROBE_INTERVAL_SECONDS: probe every unreachable source that is
    due, all at once (each bounded by PROVISIONING_PROBE_TIMEOUT_SECONDS); release the jobs of
    those that answer. Returns {source name: "recovered" or the error}.

    When every source is healthy this is one UPDATE that matches no row. A source is claimed for
    probing by moving its `next_probe_at` half an interval ahead in that UPDATE, so two probers
    running at once (two beats, a slow run) never probe the same source twice.
    """
    now = timezone.now()
    interval = settings.PROVISIONING_PROBE_INTERVAL_SECONDS
    with connection.cursor() as cur:
        cur.execute(
            _CLAIM_PROBES_SQL.format(table=connection.ops.quote_name(SourceHealth._meta.db_table)),
            [now + dt.timedelta(seconds=interval / 2), now],
        )
        due = [row[0] for row in cur.fetchall()]
    if not due:
        return {}
    timeout = settings.PROVISIONING_PROBE_TIMEOUT_SECONDS
    probes: dict[int, Callable[[], None]] = {}
    errors: dict[int, str] = {}
    names: dict[int, str] = {}
    for source in DataSource.objects.filter(pk__in=due):
        names[source.pk] = source.name
        try:
            probes[source.pk] = _prober(source, timeout)
        except Exception as exc:  # an undecryptable password, an unreadable secret store
            log.exception("Cannot probe data source %s", source.name)
            errors[source.pk] = f"cannot probe: {type(exc).__name__}: {exc}"[:2000]

    def run(item: tuple[int, Callable[[], None]]) -> tuple[int, str]:
        source_id, probe = item
        try:
            probe()
        except pg.ProvisioningError as exc:
            return source_id, exc.message
        except Exception as exc:
            log.exception("Probing data source #%s crashed", source_id)
            return source_id, f"probe failed: {type(exc).__name__}: {exc}"[:2000]
        return source_id, ""

    if probes:
        # Network only in these threads: no ORM, so no extra portal connections.
        with ThreadPoolExecutor(max_workers=min(8, len(probes)), thread_name_prefix="source-probe") as pool:
            errors.update({sid: err for sid, err in pool.map(run, probes.items()) if err})
    results: dict[str, str] = {}
    probed_at = timezone.now()
    for source_id in due:
        if source_id in errors:
            SourceHealth.objects.filter(pk=source_id, reachable=False).update(
                last_probe_at=probed_at, last_error=errors[source_id], failed_probes=F("failed_probes") + 1
            )
            results[names.get(source_id, str(source_id))] = errors[source_id]
        elif source_id in names:
            SourceHealth.objects.filter(pk=source_id).update(last_probe_at=probed_at)
            source_recovered(source_id=source_id, via="probe")
            results[names[source_id]] = "recovered"
    return results


def waiting_jobs_release_orphans() -> int:
    """Safety net (the sweeper): waiting jobs whose source is reachable are released. Normally
    none: every park re-checks under the health row lock. One query when there is nothing."""
    waiting_sources = set(
        ProvisioningJob.objects.filter(waiting_since__isnull=False, status=JobStatus.QUEUED)
        .annotate(src=Coalesce("source_id", "grant__dataset__source_id"))
        .values_list("src", flat=True)
        .distinct()
    )
    if not waiting_sources:
        return 0
    down = set(SourceHealth.objects.filter(reachable=False).values_list("source_id", flat=True))
    return sum(source_recovered(source_id=sid, via="sweeper") for sid in waiting_sources - down if sid)
