"""The product's gauges, computed from the database when Prometheus scrapes (docs/operations.md#metrics).

A fixed number of queries whatever the number of rows (QUERIES, pinned by a test): one per family
below. Read at scrape time rather than kept in each process, so that every web process answers
the same and nothing is lost when one restarts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from django.conf import settings
from django.db import connection
from django.db.models import Count, Min, Q
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from governance.models import AccessRequest, DataSource, JobStatus, ProvisioningJob
from governance.services.engine.sweep import overdue_revocations

QUERIES = 6

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
UNFINISHED = [JobStatus.QUEUED, JobStatus.RUNNING]

# Events above the chain's head: committed, not chained yet (the sealer runs every few seconds).
UNSEALED_SQL = """
SELECT count(*) FROM audit_auditevent
 WHERE id > (SELECT coalesce(max(event_id), 0) FROM audit_auditseal)
"""


class ProductCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        yield from _jobs()
        yield _overdue()
        yield _drift()
        yield _unsealed()
        yield _partitions_missing()
        yield from _pending()


def _jobs() -> Iterator[Metric]:
    """Jobs not succeeded, by status (succeeded ones are history: their number only grows), with
    those retrying (a transient error, waiting for their next attempt), stalled (past
    PROVISIONING_MAX_ATTEMPTS) and waiting for their source to answer."""
    counts: dict[str, dict[str, int]] = {
        str(r["status"]): {k: r[k] for k in ("n", "retrying", "stalled", "waiting")}
        for r in ProvisioningJob.objects.filter(status__in=[*UNFINISHED, JobStatus.FAILED])
        .values("status")
        .annotate(
            n=Count("pk"),
            retrying=Count("pk", filter=Q(attempts__gt=0, status=JobStatus.QUEUED)),
            stalled=Count("pk", filter=Q(attempts__gte=settings.PROVISIONING_MAX_ATTEMPTS)),
            waiting=Count("pk", filter=Q(waiting_since__isnull=False)),
        )
        .order_by()
    }
    by_status = GaugeMetricFamily(
        "governance_provisioning_jobs", "Provisioning jobs not succeeded, by status.", labels=["status"]
    )
    for status in [*UNFINISHED, JobStatus.FAILED]:
        by_status.add_metric([status.value], counts.get(status.value, {}).get("n", 0))
    yield by_status
    unfinished = [counts.get(s.value, {}) for s in UNFINISHED]
    for key, text in [
        ("retrying", "Queued jobs that failed at least once and wait for their next attempt."),
        ("stalled", "Jobs not finished after PROVISIONING_MAX_ATTEMPTS attempts (still retrying)."),
        ("waiting", "Jobs waiting for their data source to answer."),
    ]:
        yield GaugeMetricFamily(
            f"governance_provisioning_jobs_{key}", text, value=sum(r.get(key, 0) for r in unfinished)
        )


def _overdue() -> Metric:
    return GaugeMetricFamily(
        "governance_revocations_overdue",
        "Revocations not done REVOCATION_OVERDUE_SECONDS after they were queued: access that should be gone.",
        value=overdue_revocations().count(),
    )


def _drift() -> Metric:
    family = GaugeMetricFamily(
        "governance_drift_open", "Open drift findings (target privileges unlike grants), by source.", labels=["source"]
    )
    sources = DataSource.objects.annotate(
        n=Count("drift_findings", filter=Q(drift_findings__resolved_at__isnull=True))
    ).values_list("name", "n")
    for name, n in sources.order_by("name"):
        family.add_metric([name], n)
    return family


def _unsealed() -> Metric:
    with connection.cursor() as cur:
        cur.execute(UNSEALED_SQL)
        (n,) = cur.fetchone()
    return GaugeMetricFamily(
        "governance_audit_events_unsealed", "Audit events committed and not chained yet (above the head).", value=n
    )


def _partitions_missing() -> Metric:
    from audit.partitions import missing_ahead

    return GaugeMetricFamily(
        "governance_audit_partitions_missing",
        "Months among the current and the next AUDIT_PARTITIONS_AHEAD without their audit events partition "
        "(beat's ensure_audit_partitions has not run); their events go to the default partition.",
        value=len(missing_ahead()),
    )


def _pending() -> Iterator[Metric]:
    now = timezone.now()
    agg = AccessRequest.objects.pending().aggregate(
        under_1h=Count("pk", filter=Q(submitted_at__gt=now - HOUR)),
        h1_to_1d=Count("pk", filter=Q(submitted_at__lte=now - HOUR, submitted_at__gt=now - DAY)),
        d1_to_7d=Count("pk", filter=Q(submitted_at__lte=now - DAY, submitted_at__gt=now - 7 * DAY)),
        over_7d=Count("pk", filter=Q(submitted_at__lte=now - 7 * DAY)),
        oldest=Min("submitted_at"),
    )
    family = GaugeMetricFamily("governance_access_requests_pending", "Pending access requests, by age.", labels=["age"])
    for label, key in [
        ("under_1h", "under_1h"),
        ("1h_to_1d", "h1_to_1d"),
        ("1d_to_7d", "d1_to_7d"),
        ("over_7d", "over_7d"),
    ]:
        family.add_metric([label], agg[key])
    yield family
    oldest = agg["oldest"]
    yield GaugeMetricFamily(
        "governance_access_requests_pending_oldest_seconds",
        "Age of the oldest pending access request (0: none).",
        value=(now - oldest).total_seconds() if oldest else 0,
    )
