"""The beat heartbeat's task: its publishing is the heartbeat (observability.heartbeat); running it
does nothing."""

from celery import shared_task

from .heartbeat import TASK


@shared_task(name=TASK, ignore_result=True)
def beat_heartbeat() -> None:
    return None
