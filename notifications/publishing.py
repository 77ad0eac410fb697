"""The one module of the app that sends messages to the Celery workers, by task name (as
governance/services/publishing.py does for the engine): services never import the tasks module.
The notification tasks go to their own queue (CELERY_TASK_ROUTES), so that an email never waits in
front of a provisioning job, nor a job behind a slow mail server."""

from __future__ import annotations

from collections.abc import Iterable

from celery import current_app

DELIVER = "notifications.tasks.deliver"
SWEEP = "notifications.tasks.sweep_outbox"
ANNOUNCE_GRANT_ENDS = "notifications.tasks.announce_grant_ends"
SEND_DIGESTS = "notifications.tasks.send_digests"
TASK_NAMES = (DELIVER, SWEEP, ANNOUNCE_GRANT_ENDS, SEND_DIGESTS)
QUEUE = "notifications"


def deliver(notification_ids: Iterable[int]) -> None:
    """Prepare and send these notifications (ids only; the worker re-reads the rows)."""
    current_app.send_task(DELIVER, args=(sorted(notification_ids),))
