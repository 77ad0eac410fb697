"""Celery tasks of the access reviews: thin wrappers that open an audit context and call a service."""

from __future__ import annotations

from celery import shared_task

from audit.context import task_context

from .services.campaigns import review_campaigns_apply_deadlines, review_campaigns_start_due
from .services.reminders import review_reminders_send


@shared_task(name="reviews.tasks.run_review_campaigns")
def run_review_campaigns() -> dict[str, int]:
    """Scheduled (CELERY_BEAT_SCHEDULE): open the campaigns due, apply passed deadlines, remind."""
    with task_context("run_review_campaigns"):
        return {
            "started": review_campaigns_start_due(),
            "deadlines": review_campaigns_apply_deadlines(),
            "reminders": review_reminders_send(),
        }
