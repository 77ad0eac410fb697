"""Beat and worker tasks of the quality app: they call its services only."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model

from governance.errors import DomainError
from governance.models import Dataset

from .models import Trigger
from .services.runs import quality_run, quality_runs_due

log = logging.getLogger(__name__)


@shared_task(name="quality.tasks.run_due_quality_checks")
def run_due_quality_checks() -> int:
    """Enqueue a run for each dataset whose schedule is due (cheap when none is)."""
    due = quality_runs_due()
    for dataset_id in due:
        run_quality_checks.delay(dataset_id)
    return len(due)


# A run stops itself at QUALITY_RUN_TIME_LIMIT_SECONDS on the source; the task's limits leave room to
# record what it measured.
@shared_task(
    name="quality.tasks.run_quality_checks",
    soft_time_limit=settings.QUALITY_RUN_TIME_LIMIT_SECONDS + 30,
    time_limit=settings.QUALITY_RUN_TIME_LIMIT_SECONDS + 60,
)
def run_quality_checks(dataset_id: int, actor_id: int | None = None) -> str:
    """A scheduled run, or (with `actor_id`) the run someone asked for."""
    dataset = Dataset.objects.filter(pk=dataset_id).first()
    if dataset is None:
        return "gone"
    actor = get_user_model().objects.filter(pk=actor_id, is_active=True).first() if actor_id else None
    trigger = Trigger.MANUAL if actor_id else Trigger.SCHEDULE
    try:
        return str(quality_run(dataset=dataset, actor=actor, trigger=trigger).status)
    except DomainError as exc:  # a run already in progress: its own result stands
        log.info("quality run of dataset %s skipped: %s", dataset_id, exc.message)
        return "skipped"
