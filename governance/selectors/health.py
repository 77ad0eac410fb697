"""Reads about data source health, for the admin and the portal dashboard."""

from __future__ import annotations

from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce

from ..models import JobStatus, ProvisioningJob, SourceHealth


def waiting_jobs_count() -> Coalesce:
    """Annotation for a query whose `pk` is a data source's (DataSource, SourceHealth): the number
    of its jobs waiting for it to answer, as one correlated subquery."""
    waiting = (
        ProvisioningJob.objects.filter(waiting_since__isnull=False, status=JobStatus.QUEUED)
        .annotate(src=Coalesce("source_id", "grant__dataset__source_id"))
        .filter(src=OuterRef("pk"))
        .values("src")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(waiting), 0)


def sources_unreachable() -> QuerySet[SourceHealth]:
    """The data sources that do not answer the workers, longest outage first, with `n_waiting`."""
    return (
        SourceHealth.objects.filter(reachable=False)
        .select_related("source")
        .annotate(n_waiting=waiting_jobs_count())
        .order_by("since")
    )
