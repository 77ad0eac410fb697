"""The one module that sends messages to the Celery workers.

Messages go by the tasks' registered names (each task in `governance/tasks.py` is declared with
`name=`, and the beat schedule uses the same names), so no service imports the tasks module: tasks
call services, services publish messages, and the two never import each other (the import-linter
contracts in pyproject.toml keep it so; a test checks that every name here is a registered task).
Ids only, and only once the transaction that wrote the rows has committed.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..models import JobAction, ProvisioningJob

RUN_PROVISIONING_JOB = "governance.tasks.run_provisioning_job"
RUN_PROVISIONING_BATCH = "governance.tasks.run_provisioning_batch"
END_GRANT = "governance.tasks.end_grant"
RUN_OPERATION = "governance.tasks.run_operation"
FOLLOW_GOVERNED_VIEWS = "governance.tasks.follow_governed_views"
TASK_NAMES = (RUN_PROVISIONING_JOB, RUN_PROVISIONING_BATCH, END_GRANT, RUN_OPERATION, FOLLOW_GOVERNED_VIEWS)


def send(name: str, *args: Any, **options: Any) -> None:
    """Publish task `name` with `args` (ids and plain values); `options` as for `apply_async`."""
    current_app.send_task(name, args=args, **options)


def grant_end(grant_id: int, ends_at: dt.datetime) -> None:
    """The task that ends a grant on the second of its end (governance/services/grant_ends.py)."""
    send(END_GRANT, grant_id, ends_at.isoformat(), eta=ends_at)


def operation(operation_id: int) -> None:
    """A long operation (catalog sync, reconcile) for a worker (governance/services/operations.py)."""
    send(RUN_OPERATION, operation_id)


def governed_views_follow(source_id: int) -> None:
    """Governed views to follow their tables after a catalog sync changed columns
    (governance/services/reconcile/views.py: governed_views_follow)."""
    send(FOLLOW_GOVERNED_VIEWS, source_id)


_publishing = threading.local()


@contextmanager
def batched_publishing() -> Iterator[None]:
    """Collect the jobs queued inside the block and publish them together once the block's
    transaction commits: when at least PROVISIONING_BATCH_MIN plain applies of one source were
    queued (a bulk approval, an import, the sweeper after an outage), they go to the workers as
    batches of up to PROVISIONING_BATCH_SIZE ids that share one target transaction each; anything
    else is published one message per job, as outside the block. Without this block every job is
    published on its own commit (the lowest latency for a single approval)."""
    if getattr(_publishing, "entries", None) is not None:
        yield  # nested: the outermost block publishes
        return
    entries: list[tuple[int, int | None]] = []
    _publishing.entries = entries
    try:
        yield
    finally:
        _publishing.entries = None
        # Also when the block raised: a bulk action commits item by item, and the items before
        # the failure are committed. Inside a transaction that rolls back, Django drops this.
        if entries:
            transaction.on_commit(lambda: _publish_held(entries))


def first_publication() -> dt.datetime:
    """The `published_at` of a job queued now: the sweeper sends a duplicate of a queued job whose
    message went out more than PROVISIONING_STUCK_AFTER_SECONDS ago. Outside a block that is now
    (the message goes on this commit). Inside a `batched_publishing()` block the message goes only
    when the block ends, and a bulk action commits item by item for longer than that: the jobs are
    held, their clock starts PROVISIONING_REPUBLISH_MAX_SECONDS from now, and the block sets the
    real time when it publishes. Should the process die inside the block, the sweeper still
    publishes them then."""
    now = timezone.now()
    if getattr(_publishing, "entries", None) is None:
        return now
    return now + dt.timedelta(seconds=settings.PROVISIONING_REPUBLISH_MAX_SECONDS)


def _publish_held(entries: list[tuple[int, int | None]]) -> None:
    """A block's jobs: their clock starts now (see `first_publication`), then they are published."""
    ids = [job_id for job_id, _ in entries]
    ProvisioningJob.objects.filter(pk__in=ids, published_at__gt=timezone.now()).update(published_at=timezone.now())
    publish(entries)


def publish(entries: Iterable[tuple[int, int | None]]) -> None:
    """Send job ids to the workers: `(job id, source id if the job may run in a batch, else None)`."""
    by_source: dict[int, list[int]] = {}
    single: list[int] = []
    for job_id, source_id in entries:
        if source_id is None:
            single.append(job_id)
        else:
            by_source.setdefault(source_id, []).append(job_id)
    size = settings.PROVISIONING_BATCH_SIZE
    for ids in by_source.values():
        if len(ids) < settings.PROVISIONING_BATCH_MIN:
            single += ids
            continue
        for start in range(0, len(ids), size):
            send(RUN_PROVISIONING_BATCH, ids[start : start + size])
    for job_id in sorted(single):
        send(RUN_PROVISIONING_JOB, job_id)


def retry_later(job_id: int, countdown: float) -> None:
    """A job's retry after a transient failure (services/engine/failures.py), due in `countdown` s."""
    send(RUN_PROVISIONING_JOB, job_id, countdown=countdown)


def publish_in_order(rows: Iterable[tuple[int, str, str, int | None]]) -> None:
    """Publish `(job id, action, JIT role, source id)` rows many at once (jobs released after an
    outage, the sweeper): revocations first (access that must go), then membership changes, then
    applies, the plain applies of a source in batches. Workers take messages in publishing order."""
    rows = list(rows)
    for action in (JobAction.REVOKE, JobAction.MEMBERSHIP):
        publish((pk, None) for pk, a, _, _ in rows if a == action)
    publish((pk, source_id if source_id and not jit_role else None) for pk, a, jit_role, source_id in rows
            if a == JobAction.APPLY)  # fmt: skip


def enqueue(job: ProvisioningJob) -> None:
    """Publish a queued job once the transaction commits (with the others of a `batched_publishing()` block)."""
    entries = getattr(_publishing, "entries", None)
    if entries is None:
        transaction.on_commit(lambda: publish([(job.pk, None)]))
        return
    batch_source = None
    if job.action == JobAction.APPLY and job.grant is not None and not job.grant.jit_role:
        batch_source = job.grant.dataset.source_id  # plain applies may share a target transaction
    entries.append((job.pk, batch_source))
