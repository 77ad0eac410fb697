"""The metrics the portal's processes observe as things happen (Prometheus, prometheus-client).

A leaf module: it imports nothing of the portal, so that the engine may observe into it (the
import-linter contract `observability-instruments-leaf`). The gauges computed from the database at
scrape time are in `observability.collector`.

Several processes (gunicorn's workers, Celery's prefork children) each count their own: with
PROMETHEUS_MULTIPROC_DIR set in their environment before they start, prometheus-client writes
every process's values to files in that directory and `registry()` adds them up at scrape time
(prometheus-client's multiprocess mode; the directory must be emptied when the deployment starts,
and gunicorn's `child_exit` hook calls `mark_process_dead`: docs/operations.md#metrics).
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess

# Seconds from a grant's approval to the target verified: seconds while workers keep up, minutes
# behind a backlog or a source that does not answer.
LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)

approval_to_verified = Histogram(
    "governance_grant_approval_to_verified_seconds",
    "Seconds from a grant's approval to its access verified on the target (first activation).",
    buckets=LATENCY_BUCKETS,
)

api_requests = Counter(
    "governance_api_requests",
    "Requests answered by the REST API and SCIM, by method and HTTP status.",
    ["method", "status"],
)


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def registry() -> CollectorRegistry:
    """What a scrape reads of the observed metrics: every process's (multiprocess mode), or this
    process's own."""
    if not multiprocess_dir():
        return REGISTRY
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)
    return merged


def mark_process_dead(pid: int) -> None:
    """For gunicorn's `child_exit` hook: drop a dead worker's live-gauge files (counters and
    histograms keep counting)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)


credential_rotations = Counter(
    "governance_credential_rotations",
    "Rotations of the portal's own password on a source, by outcome (rotated, failed).",
    ["outcome"],
)
