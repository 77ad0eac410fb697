"""Celery tasks of the outbox: thin wrappers around the services, ids only. They go to the
`notifications` queue (CELERY_TASK_ROUTES): run a worker that consumes it (`make run`'s does)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from audit.context import task_context

from .services.delivery import notifications_deliver, outbox_sweep
from .services.scheduled import digests_send, grant_ends_announce


@shared_task(name="notifications.tasks.deliver")
def deliver(notification_ids: list[int]) -> dict[str, int]:
    """Published when notifications commit: prepare them and send their deliveries. What fails
    transiently is retried by the sweeper when its backoff is over."""
    with task_context("deliver_notifications"):
        return notifications_deliver(notification_ids=notification_ids).as_dict()


@shared_task(name="notifications.tasks.sweep_outbox")
def sweep_outbox() -> dict[str, Any]:
    """Beat: prepare what no task prepared, send what is due (retries, a dead worker's claims)."""
    with task_context("sweep_outbox"):
        return outbox_sweep()


@shared_task(name="notifications.tasks.announce_grant_ends")
def announce_grant_ends() -> int:
    """Beat: warn of accesses ending in 7 days and in 1 day."""
    with task_context("announce_grant_ends"):
        return grant_ends_announce()


@shared_task(name="notifications.tasks.send_digests")
def send_digests() -> int:
    """Beat, daily: one digest per person with everything held for it."""
    with task_context("send_digests"):
        return digests_send()
